"""Copy orders out to agents, their reports into etcd: the relay's bridge to the store.

Every broker replica runs one ``ImageOrders``. It follows ``images/`` (the catalog and
the replica states the leader's replication controller writes) and, for each replica in
``transferring`` whose site holds a ``Replicate`` call on this replica, sends the site a
``CopyOrder`` for that attempt — once per attempt, again when the site reconnects. What
the agents report it writes, unfenced, where the gateway writes every observation:
``observed/<site>/imagecopy/<id>`` (progress of one attempt, ``objects.IMAGE_COPY``) and
``observed/<site>/imageaudit/held`` (the site's last complete audit,
``objects.IMAGE_AUDIT``) — kinds of their own, never the ``image`` objects of a VNF.

Direct paths: a site whose audit names a ``direct_address`` accepts inbound connections;
a copy from it is ordered with that address and a transfer grant signed by ``signer``
(``replication.grant``: image, source, destination, expiry), so the bytes go site to
site. Without a signer or an address (a site behind NAT) the order names the relay. The
choice is per pair, and the agent reports which path it took.

Swarms (the broker as tracker, ``replication.tracker``): a replica the controller started
as a swarm copy is ordered with the catalog's piece list (``imagepieces/<id>``) and its
peers — the holders and the other destinations that serve directly, at most
``tracker.MAX_PEERS`` — each with a grant for that pair naming the piece list; the
destination then fetches pieces from them, never through this broker. The piece lists
the image's source site reports in its audits are written to
``observed/<site>/imagepieces/<id>`` (``objects.IMAGE_PIECES``), where the controller
takes the catalog's from.

Invariant: this module decides nothing — it only carries orders the fenced controller
wrote and observations the agents made (invariant 1: a replica keeps caches, not truth).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from meridian.v1 import image_pb2 as ipb

from broker import errors
from broker.models import objects
from broker.store import follow, keys
from broker.store.protocol import KeyValue, Store
from replication import catalog, grant, pieces, tracker
from replication import errors as rerrors
from replication.catalog import Entry, Replica, State

log = logging.getLogger(__name__)


def grant_signer(path: str) -> grant.Ed25519PrivateKey | None:
    """The transfer-grant signing key from ``path`` (``""``: none, copies use the relay)."""
    if not path:
        return None
    try:
        return grant.load_private(Path(path).read_bytes())
    except (OSError, rerrors.ReplicationError) as exc:
        raise errors.SettingsError([f"images.grant_key_file {path}: {exc}"]) from exc


class ImageOrders:
    def __init__(
        self,
        store: Store,
        *,
        chunk_size: int = 1 << 20,
        signer: grant.Ed25519PrivateKey | None = None,
        grant_ttl: float = 3600.0,
    ) -> None:
        self.store = store
        self.chunk_size = chunk_size
        self.signer = signer
        self.grant_ttl = grant_ttl
        self._direct: dict[str, str] = {}  # site -> where it serves directly, from its audits
        self._pieces: dict[str, tuple[str, str]] = {}  # image -> (piece list, its digest)
        self._entries: dict[str, Entry] = {}
        self._replicas: dict[tuple[str, str], Replica] = {}
        self._outboxes: dict[str, asyncio.Queue[ipb.CopyOrder]] = {}
        self._sent: dict[tuple[str, str], int] = {}
        self._written: dict[str, bytes] = {}

    # -- the relay's side ------------------------------------------------------------------

    def attach(self, site: str) -> asyncio.Queue[ipb.CopyOrder]:
        outbox: asyncio.Queue[ipb.CopyOrder] = asyncio.Queue()
        self._outboxes[site] = outbox
        for (image, at), _ in list(self._replicas.items()):
            if at == site:
                self._sent.pop((image, site), None)
                self._maybe_send(image, site)
        return outbox

    def detach(self, site: str, outbox: asyncio.Queue[ipb.CopyOrder]) -> None:
        if self._outboxes.get(site) is outbox:
            del self._outboxes[site]

    async def report(self, site: str, msg: ipb.ImageReport) -> None:
        """Write what the site reported (only what changed since this replica wrote it)."""
        if msg.audit:
            self._direct[site] = msg.direct_address
            audit = objects.ImageAudit(
                held={
                    r.image_id: objects.Held(r.sha256, r.size)
                    for r in msg.replicas
                    if r.state == "active"
                },
                busy=tuple(sorted(r.image_id for r in msg.replicas if r.state == "busy")),
                at_ms=int(time.time() * 1000),
                direct_address=msg.direct_address,
            )
            # every audit is written: its revision is what the controller judges drift by
            await self._put(keys.image_audit(site), audit.encode(), always=True)
            for listed in msg.piece_lists:  # only a source's list is the catalog's to take
                entry = self._entries.get(listed.image_id)
                if entry is None or entry.image.source_site != site:
                    continue
                if listed.sha256 != entry.image.sha256:
                    continue
                value = objects.PieceReport(listed.sha256, listed.pieces).encode()
                await self._put(keys.piece_report(site, listed.image_id), value)
            return
        for r in msg.replicas:
            copy = objects.CopyReport(
                r.attempt, r.state, r.offset, r.rate, r.reason, r.temporary, r.sha256, r.path
            )
            await self._put(keys.image_copy(site, r.image_id), copy.encode())

    async def _put(self, key: str, raw: bytes, *, always: bool = False) -> None:
        if not always and self._written.get(key) == raw:
            return
        await self.store.put(key, raw)
        self._written[key] = raw

    # -- following the catalog -------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow_pieces())
            group.create_task(self._follow_images())

    async def _follow_pieces(self) -> None:
        async for item in follow.follow(self.store, keys.IMAGE_PIECES):
            if isinstance(item, follow.Listed):
                gone = {keys.image_pieces(i) for i in self._pieces}
                for key in follow.forgotten(item, gone):
                    self._pieces.pop(key.removeprefix(keys.IMAGE_PIECES), None)
                continue
            key, value = follow.change(item)
            image = key.removeprefix(keys.IMAGE_PIECES)
            self._pieces.pop(image, None)
            if value:
                try:
                    manifest = pieces.Manifest.from_dict(json.loads(value))
                except (ValueError, rerrors.ReplicationError) as exc:
                    log.error("image orders: %s is corrupt: %s", key, exc)
                    continue
                self._pieces[image] = (value.decode(), manifest.digest())
            for (img, site), _ in list(self._replicas.items()):
                if img == image:
                    self._maybe_send(img, site)

    async def _follow_images(self) -> None:
        """The catalog; orders go out only once a listing is whole: a swarm order names
        its peers from every replica record, and a listing applied key by key would
        order the first destinations before the records after them (their peers) were
        read -- a restarted replica ordered swarms without the source that sorts later."""
        async for item in follow.follow(self.store, keys.IMAGES):
            if isinstance(item, follow.Listed):
                gone = {keys.image(i) for i in self._entries}
                gone |= {keys.image_replica(i, s) for i, s in self._replicas}
                for key in follow.forgotten(item, gone):
                    self._apply(key, b"")
                for image, site in list(self._replicas):
                    self._maybe_send(image, site)
            else:
                self._apply(*follow.change(item), send=not isinstance(item, KeyValue))

    def _apply(self, key: str, value: bytes, *, send: bool = True) -> None:
        image, site = keys.split_image_key(key)
        try:
            if not site:
                if value:
                    self._entries[image] = Entry.decode(value)
                else:
                    self._entries.pop(image, None)
                return
            if not value:
                self._replicas.pop((image, site), None)
                return
            self._replicas[(image, site)] = catalog.decode_replica(value)
        except rerrors.ReplicationError as exc:
            log.error("image orders: %s is corrupt: %s", key, exc)
            return
        if send:
            self._maybe_send(image, site)

    def _maybe_send(self, image: str, site: str) -> None:
        replica = self._replicas.get((image, site))
        entry = self._entries.get(image)
        outbox = self._outboxes.get(site)
        if replica is None or entry is None or outbox is None:
            return
        if replica.state is not State.TRANSFERRING or not replica.source:
            return
        if self._sent.get((image, site), 0) >= replica.ticket:
            return
        swarm = self._swarm(image, site) if replica.swarm else {}
        if replica.swarm and not swarm:
            return  # ordered once the piece list is here
        self._sent[(image, site)] = replica.ticket
        img = entry.image
        outbox.put_nowait(
            ipb.CopyOrder(
                image_id=img.id,
                name=img.name,
                size=img.size,
                sha256=img.sha256,
                os_hash_algo=img.os_hash_algo,
                os_hash_value=img.os_hash_value,
                source_site=replica.source,
                attempt=replica.ticket,
                chunk_size=self.chunk_size,
                **self._path(img.id, replica.source, site),
                **swarm,
            )
        )

    def _swarm(self, image: str, destination: str) -> dict[str, Any]:
        """A swarm copy's piece list and peers, each with a grant for the pair (``{}``:
        the piece list is not known here yet, or no signer)."""
        listed = self._pieces.get(image)
        if listed is None or self.signer is None:
            return {}
        members = {catalog.SiteId(s): r for (i, s), r in self._replicas.items() if i == image}
        expires = int((time.time() + self.grant_ttl) * 1000)
        peers = []
        for peer in tracker.peers(catalog.SiteId(destination), members, self._direct):
            g = grant.Grant(image, peer, destination, expires, listed[1])
            token = grant.sign(g, self.signer)
            peers.append(ipb.SwarmPeer(site=peer, address=self._direct[peer], grant=token))
        return {"swarm": True, "pieces": listed[0], "peers": peers}

    def _path(self, image: str, source: str, destination: str) -> dict[str, Any]:
        """The source's address and a grant for this pair, when it can be reached directly."""
        address = self._direct.get(source, "")
        if self.signer is None or not address:
            return {}
        expires = int((time.time() + self.grant_ttl) * 1000)
        token = grant.sign(grant.Grant(image, source, destination, expires), self.signer)
        return {"source_address": address, "grant": token}
