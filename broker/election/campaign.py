"""Leader election: one broker replica runs the controllers (invariant 2), fenced (3).

The recipe, on the ``Store`` only (no etcd election service, so the fake behaves alike):

1. grant a lease (``ElectionSettings.lease_ttl``) and refresh it every ttl/3;
2. ``txn``: if ``create_revision(election/controller) == 0`` put our name there with the
   lease, else read the key. Winning makes the txn revision -- the key's
   ``create_revision`` -- this term's **fence**, the token every controller write compares
   (``fencing.fenced_txn``);
3. losers watch the key from the txn revision on and campaign again the moment it is
   deleted (a clean resign, a revoked or an expired lease);
4. a leader steps down at once when a refresh fails or finds the lease gone, or when it
   sees its key deleted or overwritten. The refresh runs on a thread of the store's own
   (``store/keepalive.py``), so a loop blocked for seconds keeps its term; a loop that
   wakes past its own reckoning of the lease's deadline asks etcd before it gives up;
5. leaving (``run`` cancelled) resigns: delete the key (only if it is still ours) and
   revoke the lease, so a follower takes over in milliseconds instead of a TTL.

Stepping down is local and immediate; fencing is what makes it safe when a deposed leader
has not noticed yet.

The leader toggle: ``run_while_leading(factory)`` calls ``factory(fence)`` each time this
replica becomes leader and cancels what it started the moment that term ends. For finer
control, ``wait_leading()`` returns the current ``Term``, whose ``lost`` event is set when
the term ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from broker import errors
from broker.settings import ElectionSettings
from broker.store import keys
from broker.store import protocol as p

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Term:
    """One stretch of leadership: its fence, and an event set when it ends."""

    fence: int
    lost: asyncio.Event = field(default_factory=asyncio.Event, compare=False)


async def _cancel(*tasks: asyncio.Future[Any]) -> None:
    """Cancel ``tasks`` and wait until they are done, whatever they end with.

    The caller's own cancellation is never swallowed: if it arrives meanwhile, the
    children are still waited for, then it is raised.
    """
    for task in tasks:
        task.cancel()
    interrupted = False
    while not all(task.done() for task in tasks):
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            interrupted = True
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: the caller decides whether it matters
    if interrupted:
        raise asyncio.CancelledError


async def _first(*tasks: asyncio.Future[Any]) -> None:
    """Wait until one of ``tasks`` is done."""
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)


async def _aclose(iterator: AsyncIterator[p.WatchEvent]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(errors.BrokerError):
            await aclose()


class Campaign:
    """Campaign for ``election/controller`` as ``name`` until cancelled.

    ``run()`` is the root task; ``is_leader``, ``fence`` and ``leader_name`` tell the
    state; ``run_while_leading`` / ``wait_leading`` are the leader toggle.
    """

    def __init__(
        self,
        store: p.Store,
        name: str,
        settings: ElectionSettings | None = None,
        *,
        retry_delay: float = 0.25,
    ) -> None:
        self._store = store
        self._name = name
        self._ttl = (settings or ElectionSettings()).lease_ttl
        self._retry_delay = retry_delay
        self._term: Term | None = None
        self._leading = asyncio.Event()
        self._leader_name: str | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_leader(self) -> bool:
        return self._term is not None

    @property
    def fence(self) -> int | None:
        """This replica's fencing token while it leads, else None."""
        return None if self._term is None else self._term.fence

    @property
    def leader_name(self) -> str | None:
        """Who leads, as last seen by this campaign (None: nobody, or not known yet)."""
        return self._leader_name

    # -- the leader toggle --------------------------------------------------------------

    async def wait_leading(self) -> Term:
        """Wait until this replica leads; the term's ``lost`` is set when it ends."""
        while True:
            await self._leading.wait()
            if self._term is not None:
                return self._term

    async def run_while_leading(self, factory: Callable[[int], Awaitable[None]]) -> None:
        """Forever: while leading, run ``factory(fence)``; cancel it when the term ends.

        If what ``factory`` returned raises, the error propagates (a controller bug
        should stop the process, not be retried silently); if it returns, nothing runs
        until the next term. Cancelling this cancels the running controllers too.
        """
        while True:
            term = await self.wait_leading()
            work: asyncio.Future[None] = asyncio.ensure_future(factory(term.fence))
            lost = asyncio.ensure_future(term.lost.wait())
            try:
                await _first(work, lost)
            finally:
                await _cancel(lost)
                if not work.done():
                    log.info("%s: leadership lost, cancelling controllers", self._name)
                    await _cancel(work)
            error = None if work.cancelled() else work.exception()
            if error is not None and not term.lost.is_set():
                raise error
            if error is not None:
                log.warning("%s: a controller failed as its term ended: %r", self._name, error)
            await term.lost.wait()

    # -- the campaign -------------------------------------------------------------------

    async def run(self) -> None:
        """Campaign until cancelled; resigns on the way out."""
        try:
            while True:
                try:
                    await self._round()
                except (errors.StoreUnavailable, errors.LeaseExpired) as exc:
                    log.warning("%s: campaign interrupted: %s", self._name, exc)
                    delay = getattr(exc, "retry_after", self._retry_delay)
                    await asyncio.sleep(min(max(delay, 0.05), self._retry_delay))
        finally:
            self._step_down("campaign stopped")

    async def _round(self) -> None:
        """One lease: campaign, lead or follow, until the lease or the term is gone."""
        loop = asyncio.get_running_loop()
        granted_at = loop.time()
        lease = await self._store.grant_lease(self._ttl)
        lost = asyncio.Event()
        keeper = asyncio.ensure_future(self._keep_alive(lease, granted_at, lost))
        fence: int | None = None
        try:
            while not lost.is_set():
                result = await self._store.txn(
                    [p.Compare(keys.LEADER, p.Target.CREATE, p.Op.EQUAL, 0)],
                    [p.Put(keys.LEADER, self._name.encode(), lease=lease.id)],
                    [p.Get(keys.LEADER)],
                )
                if result.succeeded:
                    fence = result.revision
                    await self._lead(fence, lost)
                    return
                holder = result.responses[0]
                self._leader_name = holder[0].value.decode(errors="replace") if holder else None
                await self._follow(result.revision, lost)
        finally:
            self._step_down("round over")
            await _cancel(keeper)
            await self._release(lease, fence)

    async def _keep_alive(self, lease: p.Lease, granted_at: float, lost: asyncio.Event) -> None:
        """Refresh every ttl/3; set ``lost`` when the lease is gone or cannot be refreshed.

        A refresh that finds this loop past its own reckoning of the lease's deadline (the
        loop was blocked: a connect storm; or the store was slow) asks etcd once more
        before giving the term up: the store keeps the lease on a thread of its own, so
        it very likely still lives, and etcd's answer is what counts. Meanwhile nothing
        is unsafe -- a deposed leader's writes are fenced out (invariant 3)."""
        loop = asyncio.get_running_loop()
        deadline = granted_at + lease.ttl  # the lease cannot outlive this (as far as we know)
        while True:
            await asyncio.sleep(lease.ttl / 3)
            sent = loop.time()
            try:
                try:
                    async with asyncio.timeout_at(deadline):  # not wait_for: see EtcdStore._call
                        ttl = await self._store.refresh_lease(lease.id)
                except TimeoutError:
                    log.info("%s: lease %x past our deadline; asking etcd", self._name, lease.id)
                    sent = loop.time()
                    async with asyncio.timeout(lease.ttl):
                        ttl = await self._store.refresh_lease(lease.id)
            except (TimeoutError, errors.BrokerError) as exc:
                why = str(exc) or "etcd did not answer within a TTL"
                log.warning("%s: lease %x not refreshed: %s", self._name, lease.id, why)
                lost.set()
                self._step_down("lease not refreshed")
                return
            deadline = sent + ttl

    async def _lead(self, fence: int, lost: asyncio.Event) -> None:
        """Hold the term until the lease is lost or the key changes."""
        self._term = Term(fence)
        self._leader_name = self._name
        self._leading.set()
        log.info("%s: leading with fence %d", self._name, fence)
        changed = asyncio.ensure_future(self._until_key_changes(fence))
        gone = asyncio.ensure_future(lost.wait())
        try:
            await _first(changed, gone)
            if changed.done() and not changed.cancelled() and changed.exception() is not None:
                log.warning("%s: lost sight of the leader key: %s", self._name, changed.exception())
        finally:
            self._step_down("leader key changed" if changed.done() else "lease lost")
            await _cancel(changed, gone)

    async def _until_key_changes(self, fence: int) -> None:
        """Return once the leader key is deleted or overwritten after ``fence``."""
        start = fence + 1
        while True:
            watch = self._store.watch_prefix(keys.LEADER, start_revision=start)
            try:
                async for event in watch:
                    if event.key == keys.LEADER:
                        return
            except errors.StoreUnavailable as exc:
                log.info("%s: leader watch broke (%s); checking the key", self._name, exc)
            finally:
                await _aclose(watch)
            await asyncio.sleep(0.05)
            kvs, revision = await self._store.get_prefix(keys.LEADER)
            mine = [kv for kv in kvs if kv.key == keys.LEADER and kv.mod_revision == fence]
            if not mine:
                return
            start = revision + 1

    async def _follow(self, revision: int, lost: asyncio.Event) -> None:
        """Watch the leader key after ``revision``; return when it is deleted."""
        watch = self._store.watch_prefix(keys.LEADER, start_revision=revision + 1)
        gone = asyncio.ensure_future(lost.wait())

        async def until_deleted() -> None:
            async for event in watch:
                if event.key != keys.LEADER:
                    continue
                if event.type is p.EventType.DELETE:
                    self._leader_name = None
                    return
                self._leader_name = event.value.decode(errors="replace")

        deleted = asyncio.ensure_future(until_deleted())
        try:
            await _first(deleted, gone)
            if deleted.done() and not deleted.cancelled() and deleted.exception() is not None:
                log.info("%s: follower watch broke: %s", self._name, deleted.exception())
                await asyncio.sleep(self._retry_delay)
        finally:
            await _cancel(deleted, gone)
            await _aclose(watch)

    def _step_down(self, why: str) -> None:
        if self._term is None:
            return
        log.info("%s: stepping down (fence %d): %s", self._name, self._term.fence, why)
        self._term.lost.set()
        self._term = None
        self._leading.clear()
        if self._leader_name == self._name:
            self._leader_name = None

    async def _release(self, lease: p.Lease, fence: int | None) -> None:
        """Best effort: delete our key if it is still ours, then revoke the lease."""
        try:
            async with asyncio.timeout(max(1.0, self._ttl)):
                if fence is not None:
                    await self._store.txn(
                        [p.Compare(keys.LEADER, p.Target.CREATE, p.Op.EQUAL, fence)],
                        [p.Delete(keys.LEADER)],
                    )
                await self._store.revoke_lease(lease.id)
        except (TimeoutError, errors.BrokerError) as exc:
            log.info(
                "%s: could not release lease %x (it will expire): %s", self._name, lease.id, exc
            )
