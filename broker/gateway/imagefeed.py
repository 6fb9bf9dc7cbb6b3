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

Invariant: this module decides nothing — it only carries orders the fenced controller
wrote and observations the agents made (invariant 1: a replica keeps caches, not truth).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from meridian.v1 import image_pb2 as ipb

from broker import errors
from broker.models import objects
from broker.store import follow, keys
from broker.store.protocol import Store
from replication import catalog, grant
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
        async for item in follow.follow(self.store, keys.IMAGES):
            if isinstance(item, follow.Listed):
                gone = {keys.image(i) for i in self._entries}
                gone |= {keys.image_replica(i, s) for i, s in self._replicas}
                for key in follow.forgotten(item, gone):
                    self._apply(key, b"")
            else:
                self._apply(*follow.change(item))

    def _apply(self, key: str, value: bytes) -> None:
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
            )
        )

    def _path(self, image: str, source: str, destination: str) -> dict[str, str]:
        """The source's address and a grant for this pair, when it can be reached directly."""
        address = self._direct.get(source, "")
        if self.signer is None or not address:
            return {}
        expires = int((time.time() + self.grant_ttl) * 1000)
        token = grant.sign(grant.Grant(image, source, destination, expires), self.signer)
        return {"source_address": address, "grant": token}
