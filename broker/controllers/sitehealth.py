"""Site health: a site whose heartbeats stop goes DOWN; when they resume it goes UP.

The controller watches ``sitestatus/``. Heartbeats do not reach it: the replica holding a
site's stream times them in memory and rewrites the record only when the site falls
silent for ``down_after`` seconds (``silent_since_ms``) or is heard again
(``gateway/liveness.py``). A record saying silent means DOWN; a deleted record (the
agent's stream closed, or its replica's lease ran out) means DOWN at once; a record
present and not silent means UP. A new leader gives every site without a record a full
``down_after`` of grace before judging it DOWN (its record may be on its way back).

Each verdict and its event are written in one fenced transaction (invariant 3). Watching
never waits for writing: heartbeats are timed as they arrive, verdicts queue and are
written in batches (a thousand agents reconnecting at once would otherwise back the watch
up behind a thousand transactions, and the sweep would judge silence from stale times).
Verdicts for one site are written in the order they were decided. A DOWN verdict holds
the leader's priority lane (``lane.Lane``) until it is written: re-placements and other
background work wait for it, and its write takes the store's urgent lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from broker.controllers import registry
from broker.controllers.lane import Lane
from broker import errors
from broker.election import fencing
from broker.models import codec, event
from broker.models.site import Health, SiteHealth, SiteStatus
from broker.settings import BrokerSettings
from broker.store import follow, keys, urgency
from broker.store.protocol import EventType, KeyValue, Put, Store

log = logging.getLogger(__name__)

BATCH = 60
"""Verdicts per transaction: two puts each, within etcd's default 128 operations."""


class SiteHealthController:
    def __init__(
        self,
        store: Store,
        settings: BrokerSettings,
        fence: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        lane: Lane | None = None,
    ) -> None:
        self.store = store
        self.lane = lane or Lane()
        self.settings = settings
        self.fence = fence
        self.clock = clock
        self.health: dict[str, Health] = {}
        """Verdicts written (as etcd has them)."""
        self.intended: dict[str, Health] = {}
        """Verdicts decided: written, or queued in ``pending``."""
        self.pending: list[tuple[str, Health, str]] = []
        self.unheard: dict[str, float] = {}
        """Sites judged UP by an earlier leader with no status record seen yet, and since
        when: the only sites the sweep times (a walk over these, not over every site)."""
        self.live: set[str] = set()  # sites with a status record
        self._writing = asyncio.Lock()
        self._last_ms = 0  # event times strictly increase: a site's events sort in order
        self._decided = asyncio.Event()

    async def run(self) -> None:
        """Judge sites until cancelled (the replica stops leading)."""
        while True:
            try:
                await self._follow()
            except errors.StoreUnavailable as exc:
                log.warning("site health paused: %s", exc)
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        """Watch, sweep and write side by side; the first to fail ends all three."""
        await self._load()
        tasks = [
            asyncio.create_task(self._watch()),
            asyncio.create_task(self._sweep_forever()),
            asyncio.create_task(self._write_forever()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(self) -> None:
        async for item in follow.follow(self.store, keys.SITESTATUS):
            if isinstance(item, follow.Listed):
                for key in follow.forgotten(item, {keys.sitestatus(s): s for s in self.live}):
                    self._gone(keys.name_in(keys.SITESTATUS, key))
                continue
            site = keys.name_in(keys.SITESTATUS, item.key)
            if isinstance(item, KeyValue) or item.type is EventType.PUT:
                self.live.add(site)
                self.unheard.pop(site, None)
                self._judge(site, item.value, listed=isinstance(item, KeyValue))
            else:
                self._gone(site)

    def _judge(self, site: str, value: bytes, *, listed: bool) -> None:
        """UP, or DOWN when the replica holding the stream says the site fell silent."""
        try:
            status = codec.decode(SiteStatus, value)
        except errors.InvalidInput:
            log.warning("site %s: status record does not decode; counted as live", site)
            status = None
        if status is not None and status.silent_since_ms:
            silent = max(0.0, (time.time() * 1000 - status.silent_since_ms) / 1000)
            why = f"no heartbeat for {silent:.1f}s (replica {status.replica})"
            self._decide(site, Health.DOWN, why)
        else:
            self._decide(site, Health.UP, "connected" if listed else "heartbeats heard")

    def _gone(self, site: str) -> None:
        self.live.discard(site)
        self._decide(site, Health.DOWN, "agent stream closed")

    async def _load(self) -> None:
        """The verdicts written so far; every known site gets a full grace period."""
        sites, _ = await self.store.get_prefix(keys.SITES)
        verdicts, _ = await self.store.get_prefix(keys.HEALTH)
        now = self.clock()
        known = {keys.name_in(keys.SITES, kv.key) for kv in sites}
        self.health = {site: Health.UNKNOWN for site in known}
        for kv in verdicts:
            verdict = codec.decode(SiteHealth, kv.value)
            self.health[verdict.site] = verdict.state
        self.intended = dict(self.health)
        self.pending = []
        self.live = set()
        self.unheard = {site: now for site, state in self.health.items() if state is Health.UP}

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health.sweep_interval)
            await self.sweep()

    async def sweep(self) -> None:
        """Mark DOWN every UP site without a status record for longer than the bound
        (one judged UP by an earlier leader whose record never came back).

        A site never heard from stays UNKNOWN (registered, agent not connected yet)
        rather than collecting a DOWN event at registration.
        """
        bound = self.settings.health.down_after
        now = self.clock()
        for site, seen in list(self.unheard.items()):
            silent = now - seen
            if silent <= bound:
                continue
            del self.unheard[site]
            if self.intended.get(site) is Health.UP and site not in self.live:
                self._decide(site, Health.DOWN, f"no live session for {silent:.1f}s")
        await self.flush()

    def _decide(self, site: str, state: Health, reason: str) -> None:
        """Queue a verdict unless it is already the decided one."""
        if self.intended.get(site, Health.UNKNOWN) is state:
            return
        self.intended[site] = state
        if state is Health.DOWN:
            self.lane.hold(verdict_key(site))
        self.pending.append((site, state, reason))
        self._decided.set()

    async def _write_forever(self) -> None:
        while True:
            await self._decided.wait()
            self._decided.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write every queued verdict, a batch per transaction, in the order decided.

        A batch ends before a site's second verdict (etcd takes one put per key in a
        transaction). A failed write leaves the batch queued.
        """
        async with self._writing:
            while self.pending:
                batch: list[tuple[str, Health, str]] = []
                for item in self.pending[:BATCH]:
                    if any(site == item[0] for site, _, _ in batch):
                        break
                    batch.append(item)
                await self._write(batch)
                del self.pending[: len(batch)]

    async def _write(self, batch: list[tuple[str, Health, str]]) -> None:
        at_ms = self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
        ops: list[Put] = []
        for site, state, reason in batch:
            previous = self.health.get(site, Health.UNKNOWN)
            verdict = SiteHealth(
                site=site,
                state=state,
                since_ms=at_ms,
                reason=reason,
                decided_by=self.settings.name,
                fence=self.fence,
            )
            ev = event.new(
                f"site.{state.value.lower()}",
                site,
                f"site {site} is {state.value} (was {previous.value}): {reason}",
                replica=self.settings.name,
                at_ms=at_ms,
            )
            ops += [
                Put(keys.health(site), codec.encode(verdict)),
                Put(keys.event(ev.id), codec.encode(ev)),
            ]
        down = any(state is Health.DOWN for _, state, _ in batch)
        with urgency.urgent() if down else contextlib.nullcontext():
            await fencing.fenced_txn(self.store, self.fence, ops)
        for site, state, reason in batch:
            self.health[site] = state
            self.lane.release(verdict_key(site))
            log.info("site %s: %s (%s)", site, state.value, reason)


def verdict_key(site: str) -> str:
    """The lane key of ``site``'s DOWN verdict, held until it is written."""
    return f"verdict:{site}"


@registry.controller("site health")
def _start(ctx: registry.Context) -> SiteHealthController:
    return SiteHealthController(ctx.store, ctx.settings, ctx.fence, lane=ctx.lane)
