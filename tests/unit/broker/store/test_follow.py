"""``follow``: listing, ``Listed``, events; one re-list policy. Run on the fake and on a
real etcd (``store``): nothing is lost or delivered twice across a broken watch or a
compaction, and the consumer always ends holding exactly what the store holds."""

from __future__ import annotations

import asyncio

import pytest

from broker.store import follow
from broker.store.etcd import EtcdStore
from broker.store.etcdaio import AsyncEtcdStore
from broker.store.memory import MemoryStore
from broker.store.protocol import EventType, KeyValue, Store, WatchEvent
from tests.support.watches import BreakingWatches

FAST = follow.Backoff(first=0.01, cap=0.2)


class Mirror:
    """A consumer: what it holds, checking the follow contract on every item."""

    def __init__(self) -> None:
        self.held: dict[str, bytes] = {}
        self.listing: dict[str, bytes] = {}
        self.listings: list[follow.Listed] = []
        self.last = 0  # the newest revision applied since the last Listed

    def take(self, item: follow.Item) -> None:
        if isinstance(item, KeyValue):
            self.listing[item.key] = item.value
        elif isinstance(item, follow.Listed):
            assert set(self.listing) == item.keys
            for key in follow.forgotten(item, self.held):
                del self.held[key]
            self.held.update(self.listing)
            self.listing, self.last = {}, item.revision
            self.listings.append(item)
        else:
            assert self.listings and not self.listing, "an event inside a listing"
            assert item.mod_revision > self.last, "an event out of order or repeated"
            self.last = item.mod_revision
            key, value = follow.change(item)
            if value:
                self.held[key] = value
            else:
                self.held.pop(key, None)


async def mirror(store: Store, prefix: str, into: Mirror, **kw: object) -> None:
    async for item in follow.follow(store, prefix, backoff=FAST, **kw):  # type: ignore[arg-type]
        into.take(item)


async def converged(store: Store, prefix: str, into: Mirror, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        kvs, _ = await store.get_prefix(prefix)
        if into.held == {kv.key: kv.value for kv in kvs} and into.listings:
            return
        assert asyncio.get_running_loop().time() < deadline, "the follower never caught up"
        await asyncio.sleep(0.02)


async def test_the_listing_then_listed_then_events(store: Store) -> None:
    await store.put("f/a", b"1")
    await store.put("f/b", b"2")
    await store.put("g/x", b"elsewhere")
    queue: asyncio.Queue[follow.Item] = asyncio.Queue()

    async def collect() -> None:
        async for item in follow.follow(store, "f/", backoff=FAST):
            queue.put_nowait(item)

    async def take(n: int) -> list[follow.Item]:
        return [await asyncio.wait_for(queue.get(), 10.0) for _ in range(n)]

    task = asyncio.create_task(collect())
    try:
        items = await take(3)
        await store.put("f/c", b"3")
        await store.delete("f/a")
        items += await take(2)
        await asyncio.sleep(0.2)
        assert queue.empty()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    first, second, mark, put, gone = items[:5]
    assert isinstance(first, KeyValue) and (first.key, first.value) == ("f/a", b"1")
    assert isinstance(second, KeyValue) and second.key == "f/b"
    assert isinstance(mark, follow.Listed) and mark.keys == {"f/a", "f/b"}
    assert isinstance(put, WatchEvent) and (put.type, put.key) == (EventType.PUT, "f/c")
    assert put.mod_revision > mark.revision
    assert isinstance(gone, WatchEvent) and (gone.type, gone.key) == (EventType.DELETE, "f/a")


async def test_a_broken_watch_relists_and_nothing_is_lost_or_repeated(store: Store) -> None:
    breaking = BreakingWatches(store, every=3)
    held = Mirror()
    task = asyncio.create_task(mirror(breaking, "r/", held))  # type: ignore[arg-type]
    try:
        for i in range(40):
            await store.put(f"r/{i % 7}", str(i).encode())
            if i % 5 == 4:
                await store.delete(f"r/{(i + 3) % 7}")
            if i % 4 == 3:
                await converged(store, "r/", held)
        await converged(store, "r/", held)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert breaking.breaks >= 3 and len(held.listings) >= breaking.breaks


async def compact(store: Store, revision: int) -> None:
    assert isinstance(store, MemoryStore | EtcdStore | AsyncEtcdStore)
    await store.compact(revision)


async def test_a_compacted_revision_relists(store: Store) -> None:
    """Between the listing and the watch, the store moves on and compacts: watching from
    the listing's revision fails, and the follower lists again."""
    await store.put("c/a", b"1")
    raced = False

    async def lister(prefix: str) -> tuple[list[KeyValue], int]:
        nonlocal raced
        listing = await store.get_prefix(prefix)
        if not raced:
            raced = True
            await store.delete("c/a")
            head = await store.put("c/b", b"2")
            await compact(store, head)
        return listing

    held = Mirror()
    task = asyncio.create_task(mirror(store, "c/", held, lister=lister))
    try:
        await converged(store, "c/", held)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert held.held == {"c/b": b"2"} and len(held.listings) == 2


async def test_an_unreachable_store_is_retried_never_raised() -> None:
    store = MemoryStore()
    await store.put("u/a", b"1")
    store.set_unavailable(True)
    held = Mirror()
    task = asyncio.create_task(mirror(store, "u/", held))
    await asyncio.sleep(0.2)
    assert not task.done() and not held.listings
    store.set_unavailable(False)
    try:
        await converged(store, "u/", held)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize(
    ("delay", "after"), [(0.0, 0.2), (0.2, 0.4), (2.0, 3.0), (3.0, 3.0)]
)
def test_the_backoff_doubles_up_to_its_cap(delay: float, after: float) -> None:
    assert follow.Backoff(first=0.2, cap=3.0).after(delay) == pytest.approx(after)
