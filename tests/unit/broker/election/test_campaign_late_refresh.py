"""A leader whose refresh answers later than its own reckoning of the lease's deadline
asks etcd before giving up its term: a late answer is not a lost lease. A lease that is
really gone still ends the term. ``Slow`` is a seam of our own over the in-memory store."""

from __future__ import annotations

import asyncio

from broker.election import campaign
from broker.settings import ElectionSettings
from broker.store.memory import MemoryStore


class Slow(MemoryStore):
    """One refresh of the loop answers after ``delay`` s; meanwhile the lease is kept alive
    behind its back (as the store's keeper thread does) unless ``keep`` is off."""

    def __init__(self, delay: float, *, keep: bool = True) -> None:
        super().__init__()
        self.delay, self.keep = delay, keep
        self.slow_once = False
        self.refreshes = 0

    async def refresh_lease(self, lease_id: int) -> int:
        self.refreshes += 1
        if self.slow_once:
            self.slow_once = False
            loop = asyncio.get_running_loop()
            until = loop.time() + self.delay
            while loop.time() < until:
                await asyncio.sleep(0.3)
                if self.keep:
                    await super().refresh_lease(lease_id)
        return await super().refresh_lease(lease_id)


async def leading(c: campaign.Campaign) -> campaign.Term:
    return await asyncio.wait_for(c.wait_leading(), 5)


async def test_a_late_answer_keeps_the_term() -> None:
    store = Slow(delay=3.0)
    c = campaign.Campaign(store, "late", ElectionSettings(lease_ttl=2))
    task = asyncio.create_task(c.run())
    try:
        term = await leading(c)
        store.slow_once = True  # the next refresh answers 3 s later: past our deadline
        await asyncio.sleep(5.0)
        assert c.is_leader and c.fence == term.fence and not term.lost.is_set()
        assert not store.slow_once and store.refreshes >= 4
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_lease_really_gone_still_ends_the_term() -> None:
    store = Slow(delay=3.0, keep=False)  # nobody keeps it: it expires meanwhile
    c = campaign.Campaign(store, "gone", ElectionSettings(lease_ttl=2))
    task = asyncio.create_task(c.run())
    try:
        term = await leading(c)
        store.slow_once = True
        await asyncio.wait_for(term.lost.wait(), 10)
        assert c.fence != term.fence
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
