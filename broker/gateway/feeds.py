"""What each gateway replica keeps current from etcd, and its own lease.

- ``ReplicaLease``: the lease every live-session record of this replica hangs on, so the
  records vanish by themselves when the replica dies (a surviving replica's agents have
  rewritten theirs under their new replica's lease by then). Losing it while alive is
  survivable: a new lease is taken and the records are written again; no stream ends.
- ``Revocations``: revoked certificate serials, followed (``store.follow``), so a
  revocation made through any replica refuses and closes streams on every replica at once.
- ``DesiredFeed``: one watch over ``desired/`` for the whole replica, routing each change
  to the stream of its site, if this replica holds it; it also knows which sites have
  desired objects at all, so an opening stream of a site with none reads nothing.
- ``RegisteredSites``: the registered site ids, followed, so an opening stream of a
  registered site is checked without an etcd read (a site not found there is still read
  from etcd before it is refused: a registration may be younger than the watch).

Both spare a cold herd's openings their etcd reads: at 10,000 agents dialling at once,
two reads per opening queued the replica's etcd pool past its timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from broker import errors
from broker.gateway.sessions import Registry, Session
from broker.models import objects
from broker.pki import identity
from broker.store import keys
from broker.store import follow
from broker.store.protocol import KeyValue, Store

log = logging.getLogger(__name__)


class ReplicaLease:
    """This replica's lease, kept alive; a lost lease is replaced, never fatal.

    A lease can run out under this replica's feet (etcd unreachable for a TTL, or a
    refresh that came too late). That is treated like an etcd outage: the next write (or
    the keeper) takes a new lease, every stream stays open, and ``on_renewed`` callbacks
    re-record what the old lease took with it.
    """

    def __init__(self, store: Store, ttl: int) -> None:
        self.store = store
        self.ttl = ttl
        self._id = 0
        self._lost = False
        self._lock = asyncio.Lock()
        self._renewed: list[Callable[[int], Awaitable[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.renewals = 0

    def on_renewed(self, callback: Callable[[int], Awaitable[None]]) -> None:
        """Call ``callback(new_lease_id)`` each time a new lease replaces a lost one."""
        self._renewed.append(callback)

    async def id(self) -> int:
        """The current lease, granted anew if there is none (or it expired)."""
        async with self._lock:
            if not self._id:
                self._id = (await self.store.grant_lease(self.ttl)).id
                if self._lost:
                    self._lost = False
                    self.renewals += 1
                    log.warning("replica lease replaced by %x", self._id)
                    for callback in self._renewed:
                        task = asyncio.create_task(self._notify(callback, self._id))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
            return self._id

    @staticmethod
    async def _notify(callback: Callable[[int], Awaitable[None]], lease_id: int) -> None:
        try:
            await callback(lease_id)
        except errors.BrokerError as exc:
            log.warning("after the replica lease was replaced: %s", exc)

    def expired(self, lease_id: int) -> None:
        """``lease_id`` was found gone: the next ``id()`` takes a new lease."""
        if lease_id and self._id == lease_id:
            log.warning("replica lease %x expired; taking a new one", lease_id)
            self._id = 0
            self._lost = True

    async def run(self) -> None:
        """Refresh the lease every third of its TTL, forever; replace it when it is lost."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            lease_id = self._id
            try:
                if lease_id:
                    await self.store.refresh_lease(lease_id)
                elif self._lost:
                    await self.id()
            except errors.LeaseExpired:
                self.expired(lease_id)
                try:
                    await self.id()
                except errors.BrokerError as exc:
                    log.warning("no new replica lease yet: %s", exc)
            except errors.BrokerError as exc:
                log.warning("replica lease not refreshed: %s", exc)

    async def revoke(self) -> None:
        if self._id:
            try:
                await self.store.revoke_lease(self._id)
            except errors.BrokerError:
                log.debug("lease revoke failed at shutdown", exc_info=True)
            self._id = 0
        for task in self._tasks:
            task.cancel()


class Revocations:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self.revoked = identity.RevocationList()
        self.ready = asyncio.Event()
        self.also: list[Callable[[int, str], int]] = []
        """More calls to end on a revocation (the image relay's ``close_serial``)."""

    def is_revoked(self, serial: int) -> bool:
        return self.revoked.is_revoked(serial)

    @staticmethod
    def _serial(key: str) -> int:
        return int(keys.name_in(keys.REVOKED, key), 16)

    def _take(self, item: follow.Item) -> None:
        if isinstance(item, KeyValue):
            return  # the listing is taken whole at its Listed mark
        if isinstance(item, follow.Listed):
            serials = {self._serial(key) for key in item.keys}
            self.revoked.replace(serials)
            for serial in serials:
                self._close(serial)
            self.ready.set()
            return
        key, value = follow.change(item)
        serial = self._serial(key)
        if value:
            self.revoked.add(serial)
            self._close(serial)
        else:
            self.revoked.remove(serial)

    def _close(self, serial: int) -> None:
        reason = f"certificate {serial:x} was revoked"
        if self.registry.close_serial(serial, reason):
            log.warning("closed the stream(s) of revoked certificate %x", serial)
        if sum(close(serial, reason) for close in self.also):
            log.warning("closed the image call(s) of revoked certificate %x", serial)

    async def run(self) -> None:
        async for item in follow.follow(self.store, keys.REVOKED):
            self._take(item)


def push(session: Session, key: str, kind: str, name: str, raw: bytes) -> None:
    """Send a stored desired object down ``session``; one that is not an agent kind's
    ``Desired`` is logged and skipped, never sent (invariant 13)."""
    if not objects.agent_kind(kind):
        log.error("desired object %s: %r is not an agent object kind; not sent", key, kind)
        return
    try:
        value = objects.Desired.decode(raw)
    except errors.InvalidInput as exc:
        log.error("desired object %s is corrupt, not sent: %s", key, exc)
        return
    session.push_desired(kind, name, value)


class DesiredFeed:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self.listed = False
        self._sites: set[str] = set()
        """Sites with a desired object seen since the last listing (never fewer than
        etcd has: a key is added before it is routed; only a listing forgets)."""

    def may_have(self, site: str) -> bool:
        """False only when ``site`` surely has no desired object. Sound for a stream
        registered before asking: whatever arrives after the question is routed to it,
        and whatever arrived before is counted here."""
        return not self.listed or site in self._sites

    def _route(self, key: str, raw: bytes) -> None:
        site, kind, name = keys.split_object(key)
        self._sites.add(site)
        session = self.registry.get(site)
        if session is None or not name:
            return
        push(session, key, kind, name, raw)

    async def run(self) -> None:
        async for item in follow.follow(self.store, keys.DESIRED):
            if isinstance(item, follow.Listed):
                self._sites = {keys.split_object(k)[0] for k in item.keys}
                self.listed = True
                continue
            key, value = follow.change(item)
            # Deleting a desired key is not how objects are removed (a tombstone with
            # deleted=true and a new generation is); a bare delete is only cleanup.
            if value:
                self._route(key, value)


class RegisteredSites:
    """The registered site ids, followed from ``sites/``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.listed = False
        self._ids: set[str] = set()

    def surely(self, site: str) -> bool:
        """True when ``site`` is registered as far as the watch has seen; False means
        "ask etcd" (not listed yet, or registered after the last event seen)."""
        return self.listed and site in self._ids

    async def run(self) -> None:
        async for item in follow.follow(self.store, keys.SITES):
            if isinstance(item, follow.Listed):
                self._ids = {keys.name_in(keys.SITES, k) for k in item.keys}
                self.listed = True
                continue
            key, value = follow.change(item)
            site = keys.name_in(keys.SITES, key)
            if value:
                self._ids.add(site)
            else:
                self._ids.discard(site)
