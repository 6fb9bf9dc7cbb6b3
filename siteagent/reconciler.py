"""The declarative reconciler: desired objects in, a converged cloud and statuses out.

The session ``submit``s each ``DesiredObject`` the broker pushes; ``run`` converges the
driver to them one operation at a time — deletes first, in reverse dependency order
(a server before its ports, a port before its network), then applies in dependency
order (flavors and networks before ports, ports before servers) — and reports every
change of an object's ``ObjectStatus`` through ``statuses()`` (and ``on_status``).

Invariant 4: a submission whose generation is not newer than the one already held
(queued, converging, converged or failed) is ignored, so redelivery, reconnect and
replay are harmless; the driver is never asked for the same generation twice after it
converged. Temporary failures are retried with jittered exponential backoff (capped,
never sooner than the cloud's ``retry_after``); permanent ones wait for a new
generation. ``PENDING`` objects are polled with ``observe`` until they settle, and
converged servers are re-observed (``reobserve``) so that one lost at the site behind the
agent's back, or on a failed host, is reported.

Cost: idle means awaiting one ``asyncio.Event``; retries and polls are loop timers, so a
thousand reconcilers in one process cost nothing while nothing changes. Statuses are
coalesced per object for ``statuses()``: a slow or absent reader holds at most one
pending status per object, never an unbounded queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import logging
import random
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from siteagent import errors, models
from siteagent.drivers import base

log = logging.getLogger(__name__)

REOBSERVED = frozenset({"server"})
"""Kinds re-observed after they converged: what can be lost at a site behind our back."""
GONE = "gone: no longer at the site (deleted or lost out of band)"
GONE_OUTPUT = "gone"
"""The output (``"true"``) that says a FAILED object is gone from the site, not broken at
it: the broker may build it at the same site again (a new generation re-creates it)."""
HOLD_S = 5.0
"""After a reconnect, how long a server's status claiming the active role is held back,
waiting for the broker's desired state (which may demote it: never report a stale active)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between retries of a temporarily failing object."""

    base: float = 0.5
    """Delay before the first retry, in seconds."""
    factor: float = 2.0
    cap: float = 60.0
    """No delay is longer, not even a cloud's ``retry_after``."""
    jitter: float = 0.5
    """Up to this fraction of each delay is removed at random, spreading retries out."""

    def delay(self, attempt: int, rng: random.Random, *, floor: float = 0.0) -> float:
        """The delay before retry ``attempt`` (0 for the first), at least ``floor``."""
        raw = min(self.cap, self.base * self.factor ** min(attempt, 64))
        return min(self.cap, max(floor, raw * (1.0 - self.jitter * rng.random())))


@dataclass(slots=True)
class _Entry:
    desired: models.DesiredObject
    attempts: int = 0
    polling: bool = False
    """The driver said PENDING: the next operation is ``observe``."""
    token: int = 0
    """Bumped on every (re)scheduling; heap items and timers with an older one are stale."""
    timer: asyncio.TimerHandle | None = None


def _priority(obj: models.DesiredObject) -> tuple[int, int]:
    if obj.deleted:
        return 0, base.DELETE_ORDER.get(obj.kind, -1)
    return 1, base.APPLY_ORDER.get(obj.kind, len(base.APPLY_ORDER))


class Reconciler:
    """Converges one site's driver to the desired objects submitted to it."""

    def __init__(
        self,
        driver: base.Driver,
        *,
        on_status: Callable[[models.ObjectStatus], None] | None = None,
        backoff: Backoff = Backoff(),
        poll_interval: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        self.driver = driver
        self.backoff = backoff
        self.poll_interval = poll_interval
        self._on_status = on_status
        self._rng = rng or random.Random()
        self._entries: dict[str, _Entry] = {}
        self._converged: dict[str, int] = {}
        self._last: dict[str, models.ObjectStatus] = {}
        self._dirty: dict[str, None] = {}
        self._heap: list[tuple[tuple[int, int], int, str, int]] = []
        self._seq = 0
        self._timers = 0
        self._working = False
        self._current = ""
        self._audited: set[str] = set()
        self._held: dict[str, float] = {}
        """Keys whose replay waits (loop time until when) for a newer desired generation."""
        """Keys whose last status came from a re-observation that found them FAILED."""
        self._running = False
        self._work = asyncio.Event()
        self._news = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    # -- what the session calls --------------------------------------------------------

    async def submit(self, obj: models.DesiredObject) -> bool:
        """Take ``obj`` as desired if its generation is newer than the one held.

        Returns whether it was taken; an older or equal generation changes nothing.
        """
        entry = self._entries.get(obj.key)
        if entry is None:
            entry = self._entries[obj.key] = _Entry(obj)
        elif obj.generation <= entry.desired.generation:
            return False
        entry.desired = obj
        entry.attempts = 0
        entry.polling = False
        self._audited.discard(obj.key)
        self._held.pop(obj.key, None)  # the stale status never goes out: the new one will
        self._enqueue(entry)
        return True

    def snapshot(self) -> dict[str, int]:
        """The generation each object converged to (READY or DELETED), by ``kind/name``."""
        return dict(self._converged)

    def observed(self) -> list[models.ObjectStatus]:
        """The latest status of every object this reconciler has reported on."""
        return list(self._last.values())

    def status(self, kind: str, name: str) -> models.ObjectStatus | None:
        return self._last.get(models.object_key(kind, name))

    def report(self, status: models.ObjectStatus) -> None:
        """Report a status seen outside the driver calls (drift found by a watcher)."""
        if status.key in self._entries:
            self._emit(status)

    def replay(self) -> None:
        """Report the latest status of every object again (after a reconnect).

        A server's status claiming the active role is held back for ``HOLD_S``: the desired
        state the broker sends on the new stream may demote it (its site was failed over
        while away), and then only the new generation's status goes out. Unchanged by
        then, it is reported as it is.
        """
        loop = asyncio.get_running_loop()
        for key, status in self._last.items():
            if status.kind == "server" and status.outputs.get("role") == "active":
                self._held[key] = loop.time() + HOLD_S
            else:
                self._dirty[key] = None
        if self._held:
            loop.call_later(HOLD_S, self._release_held)
        if self._dirty:
            self._news.set()

    def _release_held(self) -> None:
        now = asyncio.get_running_loop().time()
        for key, until in list(self._held.items()):
            if until <= now:
                del self._held[key]
                self._dirty[key] = None
                self._news.set()

    async def statuses(self) -> AsyncGenerator[models.ObjectStatus, None]:
        """Every status change, coalesced per object while unread; runs until cancelled.

        Meant for one reader at a time (the session's current stream).
        """
        while True:
            while self._dirty:
                key = next(iter(self._dirty))
                del self._dirty[key]
                yield self._last[key]
            self._news.clear()
            await self._news.wait()

    async def wait_idle(self) -> None:
        """Return once nothing is queued, in flight, or scheduled for retry or polling."""
        await self._idle.wait()

    async def reobserve(self, interval: float, kinds: frozenset[str] = REOBSERVED) -> None:
        """Re-observe converged objects of ``kinds`` every ``interval`` s, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.reobserve_once(kinds)

    async def reobserve_once(self, kinds: frozenset[str] = REOBSERVED) -> int:
        """Ask the driver again about every converged object of ``kinds``; report changes.

        A server gone out of band (deleted, crashed away) is reported FAILED, permanently
        (the broker decides: re-place, or a new generation re-creates it); one on a failed
        host as the driver sees it; one that recovered as READY again. Returns how many
        were asked about. Objects being worked on (queued, polled, retried) are skipped.
        """
        asked = 0
        for key, entry in list(self._entries.items()):
            obj = entry.desired
            last = self._last.get(key)
            if (
                obj.deleted
                or obj.kind not in kinds
                or entry.polling
                or entry.timer is not None
                or key == self._current
                or last is None
                or last.observed_generation != obj.generation
                or not (last.state is models.ObjectState.READY or key in self._audited)
            ):
                continue
            asked += 1
            try:
                status = await self.driver.observe(obj.kind, obj.name)
            except Exception as exc:  # an unreachable cloud says nothing about the object
                log.debug("%s: re-observation failed: %r", key, exc)
                continue
            if entry.desired is not obj or key == self._current:
                continue  # a new generation arrived meanwhile: its own apply reports
            if status is None:
                status = models.ObjectStatus(
                    obj.kind,
                    obj.name,
                    obj.generation,
                    models.ObjectState.FAILED,
                    GONE,
                    outputs={**last.outputs, GONE_OUTPUT: "true"},
                )
            status = dataclasses.replace(status, observed_generation=obj.generation)
            if status.state is models.ObjectState.FAILED:
                self._audited.add(key)
            else:
                self._audited.discard(key)
            self._emit(status)
        return asked

    # -- the worker ------------------------------------------------------------------------

    async def run(self) -> None:
        """Converge until cancelled, one driver operation at a time."""
        if self._running:
            raise RuntimeError("Reconciler.run is already running")
        self._running = True
        try:
            while True:
                entry = await self._next()
                self._working, self._current = True, entry.desired.key
                try:
                    await self._process(entry)
                finally:
                    self._working, self._current = False, ""
                    self._update_idle()
        finally:
            self._running = False
            for entry in self._entries.values():
                self._cancel_timer(entry)

    async def _next(self) -> _Entry:
        while True:
            while self._heap:
                _, _, key, token = heapq.heappop(self._heap)
                entry = self._entries[key]
                if entry.token == token:
                    return entry
            self._update_idle()
            self._work.clear()
            await self._work.wait()

    async def _process(self, entry: _Entry) -> None:
        obj = entry.desired
        observing = entry.polling and not obj.deleted
        try:
            if obj.deleted:
                status: models.ObjectStatus | None = await self.driver.delete(obj.kind, obj.name)
            elif observing:
                status = await self.driver.observe(obj.kind, obj.name)
            else:
                status = await self.driver.apply(obj)
        except Exception as exc:  # one object's failure never stops the others
            if entry.desired is obj:
                self._failed(entry, exc)
            return
        if entry.desired is not obj:
            return  # a newer generation arrived meanwhile and is queued; this one is moot
        if status is None:  # it vanished while we polled it: create it again
            entry.polling = False
            self._enqueue(entry)
            return
        self._settle(entry, dataclasses.replace(status, observed_generation=obj.generation))

    def _settle(self, entry: _Entry, status: models.ObjectStatus) -> None:
        state = status.state
        key = entry.desired.key
        if state is models.ObjectState.PENDING:
            entry.polling = True
            self._schedule(entry, self.poll_interval)
        elif state is models.ObjectState.FAILED:
            entry.polling = False
            if status.temporary:
                self._retry(entry, 0.0)
        else:
            entry.polling = False
            entry.attempts = 0
            self._converged[key] = entry.desired.generation
        self._emit(status)

    def _failed(self, entry: _Entry, exc: Exception) -> None:
        obj = entry.desired
        delay = errors.retry_delay(exc)
        if not isinstance(exc, errors.SiteAgentError):
            # a driver bug, not a cloud answer: say so, and keep retrying in case it passes
            log.error("%s: driver raised %r", obj.key, exc, exc_info=exc)
            delay = 0.0
        message = str(exc) or type(exc).__name__
        if delay is not None:
            self._retry(entry, delay)
        status = models.ObjectStatus(
            obj.kind,
            obj.name,
            obj.generation,
            models.ObjectState.FAILED,
            message,
            temporary=delay is not None,
        )
        self._emit(status)

    def _retry(self, entry: _Entry, floor: float) -> None:
        delay = self.backoff.delay(entry.attempts, self._rng, floor=floor)
        entry.attempts += 1
        self._schedule(entry, delay)

    # -- queueing --------------------------------------------------------------------------

    def _enqueue(self, entry: _Entry) -> None:
        self._cancel_timer(entry)
        entry.token += 1
        self._seq += 1
        heapq.heappush(
            self._heap, (_priority(entry.desired), self._seq, entry.desired.key, entry.token)
        )
        self._idle.clear()
        self._work.set()

    def _schedule(self, entry: _Entry, delay: float) -> None:
        self._cancel_timer(entry)
        entry.token += 1
        loop = asyncio.get_running_loop()
        entry.timer = loop.call_later(delay, self._due, entry, entry.token)
        self._timers += 1
        self._idle.clear()

    def _due(self, entry: _Entry, token: int) -> None:
        entry.timer = None
        self._timers -= 1
        if entry.token == token:
            self._enqueue(entry)
        else:
            self._update_idle()

    def _cancel_timer(self, entry: _Entry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
            self._timers -= 1

    def _update_idle(self) -> None:
        if not self._heap and not self._timers and not self._working:
            self._idle.set()

    def _emit(self, status: models.ObjectStatus) -> None:
        if self._last.get(status.key) == status:
            return
        self._last[status.key] = status
        if status.key in self._held:
            return  # reported when the hold ends, unless a newer generation comes first
        self._dirty[status.key] = None
        self._news.set()
        if self._on_status is not None:
            self._on_status(status)
