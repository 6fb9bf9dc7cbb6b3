"""The survivability controller (leader only): the N+1 report, recomputed on change.

It follows what the report is computed from — ``sites/``, ``health/``, ``inventory/``,
``claims/``, ``vnfs/`` and the quota ledger (``quota/``) — and, after a change, waits
``DEBOUNCE_S`` (changes meanwhile join the same round) and at least ``SPACING`` times
the last computation's duration since it ended (a large federation's report takes
seconds: it never runs back to back), then computes the report for every site, zone and
region on a fresh snapshot (``broker.drills.survivability``, in a worker thread: the
snapshot is this round's own copy, so the event loop and the lease refresh keep going)
and stores it under ``reports/survivability`` (fenced). ``GET /v1/reports/survivability``
answers from it, so the request stays fast.

A round starts only while the leader's priority lane is clear (``lane.Lane``): the report
never competes with a DOWN verdict or a promotion for the loop, the GIL or etcd.

Invariant: the stored report is one computation on one snapshot (its
``snapshot_revision``), written only by the current leader.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from broker import errors
from broker.controllers import registry
from broker.controllers.lane import Lane
from broker.drills import inputs, survivability
from broker.election.fencing import fenced_txn
from broker.placement.snapshot import Snapshot
from broker.settings import BrokerSettings
from broker.store import follow, keys
from broker.store.protocol import Put, Store

log = logging.getLogger(__name__)

DEBOUNCE_S = 2.0
SPACING = 3.0
WATCHED = (keys.SITES, keys.HEALTH, keys.INVENTORY, keys.CLAIMS, keys.VNFS, keys.QUOTA)


class SurvivabilityController:
    def __init__(
        self, store: Store, fence: int, settings: BrokerSettings, lane: Lane | None = None
    ) -> None:
        self.store, self.fence, self.settings = store, fence, settings
        self.lane = lane or Lane()
        self.changed = asyncio.Event()
        self.took_s = 0.0

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for prefix in WATCHED:
                tg.create_task(self._follow(prefix))
            tg.create_task(self._work())

    async def _follow(self, prefix: str) -> None:
        async for _ in follow.changes(self.store, prefix):
            self.changed.set()

    async def _work(self) -> None:
        while True:
            await self.changed.wait()
            await asyncio.sleep(max(DEBOUNCE_S, SPACING * self.took_s))
            await self.lane.clear()
            self.changed.clear()
            try:
                await self.compute()
            except (errors.StoreUnavailable, errors.Conflict) as exc:
                log.info("survivability report: %s; again", exc)
                self.changed.set()

    async def compute(self) -> None:
        """One report on a fresh snapshot, stored (fenced)."""
        started = time.monotonic()
        snap = await Snapshot.load(self.store)
        placed = await inputs.placed(self.store)
        free = await inputs.quota_free(self.store, placed)
        out = await asyncio.to_thread(
            survivability.report, snap, placed, self.settings, quota_free=free
        )
        self.took_s = time.monotonic() - started
        out |= {
            "snapshot_revision": snap.revision,
            "computed_ms": int(time.time() * 1000),
            "took_s": round(self.took_s, 3),
        }
        await fenced_txn(
            self.store,
            self.fence,
            [Put(keys.SURVIVABILITY, json.dumps(survivability.pack(out)).encode())],
        )


@registry.controller("survivability")
def _start(ctx: registry.Context) -> SurvivabilityController:
    return SurvivabilityController(ctx.store, ctx.fence, ctx.settings, ctx.lane)
