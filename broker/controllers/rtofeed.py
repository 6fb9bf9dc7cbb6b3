"""Real failovers' measured recovery times into ``reports/rto`` (leader only).

Every ``EVERY_S`` it reads the event log from ``LOOKBACK_S`` before the stored cursor
(``events_after``: a loss may precede its completion by that much), pairs each real
``vnf.member_lost`` with the VNF's next ``vnf.failover_completed`` and ``vnf.healed``
(``broker.drills.rto.from_events``), and appends the pairs completed after the cursor to
the promotion and restore samples the what-if estimates from. The drill controller adds a
finished drill's measured values to the same document.

Invariant: fenced, and compared on the document as read, so a value is counted once
whichever leader reads it (the cursor moves with the values).
"""

from __future__ import annotations

import asyncio
import json
import logging

from broker import errors
from broker.controllers import registry
from broker.drills import rto
from broker.election.fencing import fenced_txn
from broker.models import codec, event
from broker.store import keys
from broker.store.protocol import Compare, Op, Put, Store, Target

log = logging.getLogger(__name__)

EVERY_S = 30.0
LOOKBACK_S = 600.0


class RtoFeed:
    def __init__(self, store: Store, fence: int) -> None:
        self.store, self.fence = store, fence

    async def run(self) -> None:
        while True:
            try:
                await self.feed()
            except (errors.Conflict, errors.StoreUnavailable) as exc:
                log.info("rto feed: %s; again", exc)
            await asyncio.sleep(EVERY_S)

    async def feed(self) -> int:
        """One round; returns how many values it added."""
        kv = await self.store.get(keys.RTO_MEASURED)
        doc = json.loads(kv.value) if kv is not None else {}
        cursor = str(doc.get("events_after", ""))
        from_ms = int(cursor[:13] or "0") - int(LOOKBACK_S * 1000)
        kvs, _, _ = await self.store.get_range(keys.EVENTS, after=f"{max(0, from_ms):013d}")
        if not kvs:
            return 0
        evs = [codec.decode(event.Event, e.value) for e in kvs]
        promote, restore = rto.from_events(evs, cursor)
        newest = keys.name_in(keys.EVENTS, kvs[-1].key)
        if newest <= cursor:
            return 0
        new = rto.merge(doc, promote, restore, events_after=newest)
        check = Compare(keys.RTO_MEASURED, Target.MOD, Op.EQUAL, kv.mod_revision if kv else 0)
        await fenced_txn(
            self.store, self.fence, [Put(keys.RTO_MEASURED, json.dumps(new).encode())], [check]
        )
        return len(promote) + len(restore)


@registry.controller("rto feed")
def _start(ctx: registry.Context) -> RtoFeed:
    return RtoFeed(ctx.store, ctx.fence)
