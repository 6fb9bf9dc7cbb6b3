"""The swarm tracker's decisions: which copies swarm, and whom each destination may ask.

The broker is the tracker, never the pipe. For an image whose piece list the catalog
records, a destination that accepts inbound connections (it reported a direct address)
swarms: it fetches pieces from every peer the broker names — the sites holding the image
and the other destinations of the same image that serve directly — each peer under a grant
of its own for that pair and piece list, and serves the pieces it verified meanwhile. Who
holds which piece is asked of the peers themselves (``replication.swarm``); the tracker
keeps only the coarse state: who is in the swarm and how far each one got (its replica).

A destination behind NAT (no direct address) cannot serve the swarm and is not one of its
members: it copies as before, through the broker relay when the source cannot be reached.

Invariant: a destination is named at most ``MAX_PEERS`` peers, the holders first (they
have every piece), then the other members in an order of the destination's own (rendezvous
hashing: every destination asks a different few, and a member joining or leaving moves
only its own place) — grants and peer state stay bounded however many sites swarm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from replication.catalog import Replica, SiteId, State

MAX_PEERS = 16
MAX_HOLDERS = 4  # of the peers: sites that hold the image whole


def swarms(destination: SiteId, addresses: Mapping[str, str], seeds: list[SiteId]) -> bool:
    """Whether ``destination`` joins the swarm: it serves directly and some holder does."""
    return bool(addresses.get(destination)) and bool(seeds)


def seeds(
    replicas: Mapping[SiteId, Replica], addresses: Mapping[str, str], connected: frozenset[str]
) -> list[SiteId]:
    """Holders (active, connected) that serve directly: a swarm starts from them."""
    return sorted(
        s
        for s, r in replicas.items()
        if r.state is State.ACTIVE and s in connected and addresses.get(s)
    )


def _rank(destination: str, peer: str) -> bytes:
    return hashlib.sha256(f"{destination}\0{peer}".encode()).digest()


def peers(
    destination: SiteId,
    replicas: Mapping[SiteId, Replica],
    addresses: Mapping[str, str],
    limit: int = MAX_PEERS,
) -> list[SiteId]:
    """The sites ``destination`` may fetch pieces from: holders that serve directly, then
    the other members of the swarm (destinations that serve directly), at most ``limit``."""
    holders = sorted(
        (s for s, r in replicas.items() if r.state is State.ACTIVE and addresses.get(s)),
        key=lambda s: _rank(destination, s),
    )[: min(MAX_HOLDERS, limit)]
    # every destination still on its way that serves directly swarms (or will, in this
    # pass): name it now, it answers "nothing yet" until it has pieces
    members = sorted(
        (
            s
            for s, r in replicas.items()
            if s != destination
            and r.state in (State.QUEUED, State.TRANSFERRING, State.VERIFYING)
            and addresses.get(s)
        ),
        key=lambda s: _rank(destination, s),
    )
    return [*holders, *members][:limit]
