"""Liveness of the streams this replica holds, judged here, in memory.

A heartbeat touches only its session (the time it arrived and its sequence number) and
moves it to the back of this replica's order of sessions by last heartbeat (O(1), nothing
allocated). Nothing is written to etcd for it. Every ``health.sweep_interval`` (and at
once when a silent site is heard again) ``Liveness`` walks that order from the front --
the longest-silent first -- only as far as the first session heard within
``health.down_after``, so a sweep costs the sessions that flip, not the sessions held,
and writes only what changed: the site's ``sitestatus`` record with ``silent_since_ms``
set (silent) or cleared (heard again), a batch of sites per transaction under the
replica's lease. The leader's site-health controller turns those records into fenced
UP/DOWN verdicts; a replica that dies takes its records with its
lease, so the leader still sees every site it held go DOWN.

Invariant: a ``sitestatus`` record is written when a session opens, when its liveness
flips, and when the replica's lease is replaced -- never per heartbeat. A record the lost
lease took is owed until it is written again: the sweep retries it while etcd is still
coming back (heartbeats write nothing, so nothing else would bring it back). Likewise a
closed session's record whose delete etcd did not take is owed a delete.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from broker import errors
from broker.gateway.feeds import ReplicaLease
from broker.gateway.sessions import Registry, Session
from broker.models import codec
from broker.models import site as sitemodel
from broker.settings import BrokerSettings
from broker.store import keys, urgency
from broker.store.protocol import Compare, Delete, Op, Put, Store, Target, TxnOp, TxnResult

log = logging.getLogger(__name__)

BATCH = 120
"""Status records per transaction (etcd takes 128 operations)."""


def now_ms() -> int:
    return int(time.time() * 1000)


def record(session: Session, replica: str, silent_since_ms: int = 0) -> bytes:
    """The ``sitestatus`` value of ``session`` as this replica knows it now."""
    return codec.encode(
        sitemodel.SiteStatus(
            site=session.site,
            replica=replica,
            session_id=session.session_id,
            protocol=session.protocol,
            agent_version=session.agent_version,
            connected_ms=session.connected_ms,
            last_heartbeat_ms=session.heard_ms(),
            heartbeat_seq=session.seq,
            silent_since_ms=silent_since_ms,
        )
    )


async def leased_txn(
    store: Store,
    lease: ReplicaLease,
    ops: Callable[[int], Sequence[TxnOp]],
    compares: Sequence[Compare] = (),
) -> TxnResult:
    """Write ``ops(lease_id)`` under the replica's lease (if ``compares`` hold); a lease
    found lost is like an etcd outage, not a broken stream: take a new one and write
    again, once."""
    for retry in (True, False):
        lease_id = await lease.id()
        try:
            return await store.txn(list(compares), ops(lease_id))
        except errors.LeaseExpired:
            lease.expired(lease_id)
            if not retry:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _batches(flips: list[tuple[Session, bool]]) -> list[list[tuple[Session, bool]]]:
    """``flips`` in batches of at most ``BATCH``, no site twice in one: etcd refuses a
    transaction that puts one key twice, and two sessions of one site can flip in the same
    sweep (a stale one not closed yet, and the agent's newer one)."""
    out: list[list[tuple[Session, bool]]] = []
    batch: list[tuple[Session, bool]] = []
    for flip in flips:
        if len(batch) == BATCH or any(s.site == flip[0].site for s, _ in batch):
            out.append(batch)
            batch = []
        batch.append(flip)
    return [*out, batch] if batch else out


def _put_one(key: str, value: bytes, lease_id: int) -> list[TxnOp]:
    """The one put of a status record under ``lease_id``."""
    return [Put(key, value, lease_id)]


class Liveness:
    def __init__(
        self,
        store: Store,
        settings: BrokerSettings,
        registry: Registry,
        lease: ReplicaLease,
        clear: Callable[[Session], Awaitable[None]],
    ) -> None:
        self.store = store
        self.settings = settings
        self.registry = registry
        self.lease = lease
        self.clear = clear
        self.wake = asyncio.Event()
        self.writes = 0  # transactions written (tests, benchmarks)
        self.owed: set[Session] = set()
        """Sessions whose record a replaced lease took, not written again yet."""
        self.uncleared: dict[str, bytes] = {}
        """Records of closed sessions whose delete etcd did not take (key → the value the
        session wrote): deleted by the next sweeps. The replica's lease would never take
        them while the replica lives, and the leader would keep the site UP."""
        # held sessions, least recently heard first (values unused)
        self._order: collections.OrderedDict[Session, None] = collections.OrderedDict()
        self._returned: list[Session] = []  # silent sessions heard again since the sweep

    def track(self, session: Session) -> None:
        """A session opened: judge its silence from now on."""
        self._order[session] = None

    def forget(self, session: Session) -> None:
        """A session ended: no longer judged."""
        self._order.pop(session, None)

    async def owe_records(self, lease_id: int) -> None:
        """The replica's lease was replaced (``ReplicaLease.on_renewed``): every held
        session's record went with the old one. The next sweeps write them again."""
        self.owed.update(s for s in self.registry.all() if s.status_value)
        log.info("%d live sessions to re-record under lease %x", len(self.owed), lease_id)
        self.wake.set()

    def owe_clear(self, session: Session) -> None:
        """A closed session's record could not be deleted: the sweeps delete it, only
        while it is still that session's (a newer session's record is left alone)."""
        self.uncleared[keys.sitestatus(session.site)] = session.status_value

    def heard(self, session: Session, seq: int) -> None:
        """A heartbeat arrived: note it; only a silent session's return costs a write."""
        session.seq = seq
        session.last_seen = time.monotonic()
        try:
            self._order.move_to_end(session)
        except KeyError:
            return  # ended (or never tracked): nothing to judge
        if session.silent:
            self._returned.append(session)
            self.wake.set()

    async def run(self) -> None:
        """Judge and write flips until cancelled; etcd failing only delays them."""
        while True:
            try:
                async with asyncio.timeout(self.settings.health.sweep_interval):
                    await self.wake.wait()
            except TimeoutError:
                pass
            self.wake.clear()
            try:
                await self.sweep()
            except (errors.StoreUnavailable, errors.LeaseExpired) as exc:
                log.warning("liveness records wait for etcd: %s", exc)

    def flips(self) -> list[tuple[Session, bool]]:
        """Sessions whose silence no longer matches what their record says: the front of
        the order up to the first session heard within the bound, and the silent ones
        heard again."""
        bound = self.settings.health.down_after
        now = time.monotonic()
        out = []
        returned, self._returned = self._returned, []
        for session in returned:
            if not session.closed_reason and session.silent and now - session.last_seen <= bound:
                out.append((session, False))
        for session in self._order:
            if now - session.last_seen <= bound:
                break  # everything behind was heard later still
            if session.closed_reason or not session.status_value or session.silent:
                continue  # closing, its opening record not written yet, or already told
            out.append((session, True))
        return out

    async def sweep(self) -> None:
        batches = _batches(self.flips())
        for i, batch in enumerate(batches):
            try:
                await self._write(batch)
            except BaseException:
                # the silent are found again by the next walk; the returned must be kept
                self._returned.extend(s for b in batches[i:] for s, silent in b if not silent)
                raise
        await self._rerecord()
        await self._unclear()

    async def _unclear(self) -> None:
        """Delete each record a closed session left behind, if it is still its own. An
        etcd failure leaves the rest for the next sweep."""
        for key, value in list(self.uncleared.items()):
            with urgency.urgent():  # the leader judges the site DOWN on this delete
                await self.store.txn([Compare(key, Target.VALUE, Op.EQUAL, value)], [Delete(key)])
            del self.uncleared[key]
            site = keys.name_in(keys.SITESTATUS, key)
            log.info("site %s: the closed session's status record is cleared", site)

    async def _write_one(self, session: Session, silent: bool, value: bytes) -> bool:
        """Write one flip over this session's own record, or where there is none (its
        lease took it); a record of another session means this one is superseded: it is
        closed, and the newer session's record is left alone."""
        key = keys.sitestatus(session.site)
        put = functools.partial(_put_one, key, value)
        for compare in (
            Compare(key, Target.VALUE, Op.EQUAL, session.status_value),
            Compare(key, Target.VERSION, Op.EQUAL, 0),
        ):
            if (await leased_txn(self.store, self.lease, put, [compare])).succeeded:
                return True
        log.warning("site %s: a newer session holds its record; closing this one", session.site)
        session.close("superseded: the site's record belongs to a newer session")
        return False

    async def _rerecord(self) -> None:
        """Write each owed record where it is still absent (a liveness flip or a newer
        session that got there first wrote a newer one). An etcd failure leaves the rest
        owed for the next sweep."""
        for session in list(self.owed):
            if session.closed_reason or self.registry.get(session.site) is not session:
                self.owed.discard(session)
                continue
            key = keys.sitestatus(session.site)
            await leased_txn(
                self.store,
                self.lease,
                functools.partial(_put_one, key, session.status_value),
                [Compare(key, Target.VERSION, Op.EQUAL, 0)],
            )
            self.owed.discard(session)
            if session.closed_reason or self.registry.get(session.site) is not session:
                await self.clear(session)  # it closed meanwhile: take the record back

    async def _write(self, batch: list[tuple[Session, bool]]) -> None:
        """Write the flips of ``batch``, each only over the record its session wrote: a
        session this replica still holds may be stale (its agent gave up on a frozen
        replica and opened a newer session elsewhere), and its flip must never overwrite
        the newer session's record -- the site would stay DOWN under a live agent."""
        name = self.settings.name
        values = [
            (s, silent, record(s, name, s.heard_ms() if silent else 0)) for s, silent in batch
        ]
        result = await leased_txn(
            self.store,
            self.lease,
            lambda lease_id: [
                Put(keys.sitestatus(s.site), value, lease_id) for s, _, value in values
            ],
            [
                Compare(keys.sitestatus(s.site), Target.VALUE, Op.EQUAL, s.status_value)
                for s, _, _ in values
            ],
        )
        written = values if result.succeeded else [v for v in values if await self._write_one(*v)]
        self.writes += 1
        for session, silent, value in written:
            session.silent, session.status_value = silent, value
            log.info("site %s: %s", session.site, "silent" if silent else "heartbeats heard again")
            if session.closed_reason or self.registry.get(session.site) is not session:
                await self.clear(session)  # it closed meanwhile: take the record back
