"""Event retention: the leader trims ``events/`` to ``events.retain_seconds`` and
``events.retain_count``.

Event ids sort by time, so both bounds cut a key range at its old end: what is older than
the age bound, then the oldest beyond the count. Deletes are fenced (invariant 3) and go
``BATCH`` keys per transaction; a trim reads pages of keys, never the whole prefix, and
counts through the store's range count. Nothing else deletes events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from broker.controllers import registry
from broker.election import fencing
from broker.settings import BrokerSettings
from broker.store import keys
from broker.store.protocol import Delete, Store

log = logging.getLogger(__name__)

BATCH = 120
"""Deletes per transaction, within etcd's 128 operations with the fence compare."""


class EventRetention:
    def __init__(
        self,
        store: Store,
        settings: BrokerSettings,
        fence: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings.events
        self.fence = fence
        self.clock = clock

    async def run(self) -> None:
        """Trim now and every ``trim_interval`` until cancelled (leadership lost)."""
        while True:
            trimmed = await self.trim()
            if trimmed:
                log.info("event retention: %d events trimmed", trimmed)
            await asyncio.sleep(self.settings.trim_interval)

    async def trim(self) -> int:
        """Delete what the retention no longer keeps; returns how many."""
        cutoff_ms = int((self.clock() - self.settings.retain_seconds) * 1000)
        trimmed = await self._drop_before(f"{max(cutoff_ms, 0):013d}", None)
        _, _, total = await self.store.get_range(keys.EVENTS, limit=1)
        if total > self.settings.retain_count:
            trimmed += await self._drop_before("", total - self.settings.retain_count)
        return trimmed

    async def _drop_before(self, before: str, count: int | None) -> int:
        """Delete the oldest events: those before key ``before`` (empty: any), at most
        ``count`` of them (None: all)."""
        dropped = 0
        while count is None or dropped < count:
            want = BATCH if count is None else min(BATCH, count - dropped)
            kvs, _, _ = await self.store.get_range(keys.EVENTS, before=before, limit=want)
            if not kvs:
                break
            await fencing.fenced_txn(self.store, self.fence, [Delete(kv.key) for kv in kvs])
            dropped += len(kvs)
        return dropped


@registry.controller("event retention")
def _start(ctx: registry.Context) -> EventRetention:
    return EventRetention(ctx.store, ctx.settings, ctx.fence)
