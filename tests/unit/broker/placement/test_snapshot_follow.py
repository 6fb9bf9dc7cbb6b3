"""The placement snapshot kept current by ``store.follow``: ready once every prefix is
listed; after a broken watch it re-lists, so what changed meanwhile — a site gone, a site
added — is exactly what it holds (on the fake and on a real etcd)."""

from __future__ import annotations

import asyncio

import pytest

from broker import errors
from broker.placement.snapshot import Live, Snapshot
from broker.store import follow
from broker.store.memory import MemoryStore
from broker.store.protocol import Store
from tests.support.placement import SiteDef, seed_store, site_keys
from tests.support.watches import BreakingWatches

FAST = follow.Backoff(first=0.01, cap=0.2)


async def until(check: object, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "the snapshot never caught up"
        await asyncio.sleep(0.02)


async def test_the_snapshot_follows_through_broken_watches(store: Store) -> None:
    await seed_store(store, [SiteDef("a", "r1"), SiteDef("b", "r1")])
    breaking = BreakingWatches(store, every=2)
    snap = Snapshot()
    task = asyncio.create_task(snap.follow(breaking, backoff=FAST))  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(snap.ready.wait(), 10.0)
        assert {s for s, v in snap.sites.items() if v.spec is not None} == {"a", "b"}
        assert snap.sites["a"].inventory is not None
        for key, _ in site_keys(SiteDef("a", "r1")):
            await store.delete(key)
        await seed_store(store, [SiteDef("c", "r2", hosts=2)])
        await until(
            lambda: {s for s, v in snap.sites.items() if v.spec is not None} == {"b", "c"}
            and snap.sites["a"].inventory is None
            and snap.sites["c"].inventory is not None
            # each prefix has a watch of its own: c's health may come after its inventory
            and snap.sites["c"].health == "UP"
        )
        snap.ensure_arrays()
        assert int(snap.up.sum()) == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert breaking.breaks >= 1


async def test_a_replica_holds_nothing_until_the_snapshot_is_first_read(
    memory_store: MemoryStore,
) -> None:
    """A follower that never plans never pays every site's inventory in memory; the first
    read follows from then on, and a follow that died is started again by the next."""
    await seed_store(memory_store, [SiteDef("a", "r1")])
    live = Live(memory_store)
    await asyncio.sleep(0.05)
    assert live.snap.sites == {} and not live.snap.ready.is_set()
    memory_store.set_unavailable()
    dead = asyncio.create_task(live.current())
    await asyncio.sleep(0.1)
    assert live._task is not None
    live._task.cancel()  # the follow died (white-box: no store error ends it on its own)
    with pytest.raises(errors.BrokerError, match="stopped"):
        await asyncio.wait_for(dead, 5)
    memory_store.set_unavailable(False)
    snap = await asyncio.wait_for(live.current(), 10)
    assert snap.sites["a"].inventory is not None
    assert live._task is not None
    live._task.cancel()
