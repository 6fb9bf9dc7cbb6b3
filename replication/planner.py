"""Fan-out planner with relay: sites that hold the image serve the ones that lack it.

Round by round, every holder serves up to ``cap`` destinations; a site served in round
``r`` is a holder from round ``r + 1`` (over the wire it relays while still receiving,
reading only bytes it has verified). With one seed and ``cap >= 1`` the holder set at
least doubles each round, so N destinations take at most ``ceil(log2(N + 1))`` rounds.

Invariants (property-tested): every destination is served exactly once, by a site that
held the image before that round; no site serves more than ``cap`` streams in a round;
no site receives two streams.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from replication import errors
from replication.catalog import SiteId


@dataclass(frozen=True, slots=True)
class Hop:
    """One transfer: ``source`` streams the image to ``destination``."""

    source: SiteId
    destination: SiteId


@dataclass(frozen=True, slots=True)
class Plan:
    """Transfers grouped by round; round ``r`` sources held the image before it."""

    rounds: tuple[tuple[Hop, ...], ...]

    @property
    def hops(self) -> tuple[Hop, ...]:
        return tuple(h for r in self.rounds for h in r)

    def source_of(self) -> dict[SiteId, SiteId]:
        return {h.destination: h.source for h in self.hops}


def plan(
    holders: Iterable[SiteId],
    destinations: Iterable[SiteId],
    *,
    cap: int = 1,
    caps: Mapping[SiteId, int] | None = None,
    priority: Mapping[SiteId, int] | None = None,
) -> Plan:
    """Rounds of hops that get the image from ``holders`` to every destination.

    ``caps`` overrides the per-site stream cap (a bandwidth-limited site may serve 0 —
    it then only receives); higher ``priority`` destinations are served first.
    """
    if cap < 1:
        raise errors.InvalidImage("cap", "must be >= 1")
    have = sorted(set(holders))
    if not have:
        raise errors.InvalidImage("holders", "no site holds the image")
    prio = priority or {}
    want = sorted(set(destinations) - set(have), key=lambda s: (-prio.get(s, 0), s))
    limits = caps or {}
    rounds: list[tuple[Hop, ...]] = []
    servers = list(have)
    while want:
        hops: list[Hop] = []
        for src in servers:
            for _ in range(limits.get(src, cap)):
                if not want:
                    break
                hops.append(Hop(src, want.pop(0)))
        if not hops:
            raise errors.InvalidImage("caps", "no holder may serve; every cap is 0")
        rounds.append(tuple(hops))
        servers = servers + [h.destination for h in hops]
    return Plan(tuple(rounds))
