"""Site health: a site whose heartbeats stop goes DOWN; when they resume it goes UP.

The controller watches ``sitestatus/`` (rewritten by the gateway on every heartbeat) and
times what it sees with its own monotonic clock, so clock skew between replicas cannot
fake a silence. A deleted status record (the agent's stream closed, or its replica's
lease ran out) means DOWN at once; a record not rewritten for ``down_after`` seconds
means DOWN at the next sweep. A new leader gives every site a full ``down_after`` of
grace before judging it, since it has not watched the heartbeats before.

Each verdict and its event are written in one fenced transaction (invariant 3).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from broker import errors
from broker.election import fencing
from broker.models import codec, event
from broker.models.site import Health, SiteHealth
from broker.settings import BrokerSettings
from broker.store import keys
from broker.store.protocol import EventType, Put, Store

log = logging.getLogger(__name__)


class SiteHealthController:
    def __init__(
        self,
        store: Store,
        settings: BrokerSettings,
        fence: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings
        self.fence = fence
        self.clock = clock
        self.health: dict[str, Health] = {}
        self.last_seen: dict[str, float] = {}
        self.live: set[str] = set()  # sites with a status record

    async def run(self) -> None:
        """Judge sites until cancelled (the replica stops leading)."""
        while True:
            try:
                await self._follow()
            except errors.StoreUnavailable as exc:
                log.warning("site health paused: %s", exc)
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        revision = await self._load()
        sweeper = asyncio.create_task(self._sweep_forever())
        try:
            async for ev in self.store.watch_prefix(keys.SITESTATUS, start_revision=revision + 1):
                site = ev.key[len(keys.SITESTATUS) :]
                if ev.type is EventType.PUT:
                    self.live.add(site)
                    self.last_seen[site] = self.clock()
                    if self.health.get(site) is not Health.UP:
                        await self._judge(site, Health.UP, "heartbeats resumed")
                else:
                    self.live.discard(site)
                    await self._judge(site, Health.DOWN, "agent stream closed")
        finally:
            sweeper.cancel()

    async def _load(self) -> int:
        sites, _ = await self.store.get_prefix(keys.SITES)
        verdicts, _ = await self.store.get_prefix(keys.HEALTH)
        statuses, revision = await self.store.get_prefix(keys.SITESTATUS)
        now = self.clock()
        known = {kv.key[len(keys.SITES) :] for kv in sites}
        self.health = {site: Health.UNKNOWN for site in known}
        for kv in verdicts:
            verdict = codec.decode(SiteHealth, kv.value)
            self.health[verdict.site] = verdict.state
        self.live = {kv.key[len(keys.SITESTATUS) :] for kv in statuses}
        self.last_seen = {site: now for site in self.health.keys() | self.live}
        for site in self.live:
            if self.health.get(site) is not Health.UP:
                await self._judge(site, Health.UP, "connected")
        return revision

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health.sweep_interval)
            await self.sweep()

    async def sweep(self) -> None:
        """Mark DOWN every UP site silent for longer than the bound.

        A site never heard from stays UNKNOWN (registered, agent not connected yet)
        rather than collecting a DOWN event at registration.
        """
        bound = self.settings.health.down_after
        now = self.clock()
        for site, seen in list(self.last_seen.items()):
            if self.health.get(site) is not Health.UP:
                continue
            silent = now - seen
            if silent > bound:
                await self._judge(site, Health.DOWN, f"no heartbeat for {silent:.1f}s")

    async def _judge(self, site: str, state: Health, reason: str) -> None:
        if self.health.get(site) is state:
            return
        previous = self.health.get(site, Health.UNKNOWN)
        at_ms = int(time.time() * 1000)
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
        await fencing.fenced_txn(
            self.store,
            self.fence,
            [
                Put(keys.health(site), codec.encode(verdict)),
                Put(keys.event(ev.id), codec.encode(ev)),
            ],
        )
        self.health[site] = state
        log.info("site %s: %s (%s)", site, state.value, reason)
