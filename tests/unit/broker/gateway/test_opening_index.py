"""What an opening stream knows without reading etcd: the registered sites and which sites
have desired objects at all, both followed (``gateway/feeds.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from broker.gateway.feeds import DesiredFeed, RegisteredSites
from broker.gateway.sessions import Registry
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.support import gateway as gw
from tests.support import spy


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not reached within {within} s")


async def test_desired_feed_knows_which_sites_have_desired_objects(
    memory_store: MemoryStore,
) -> None:
    await memory_store.put(keys.desired("site-a", "quota", "t1"), b"{}")
    feed = DesiredFeed(memory_store, Registry())
    assert feed.may_have("site-b"), "before its listing it knows nothing: read"
    task = asyncio.create_task(feed.run())
    try:
        await until(lambda: feed.listed)
        assert feed.may_have("site-a") and not feed.may_have("site-b")
        await memory_store.put(keys.desired("site-b", "quota", "t1"), b"{}")
        await until(lambda: feed.may_have("site-b"))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_registered_sites_follow_registration_and_removal(
    memory_store: MemoryStore,
) -> None:
    await gw.register(memory_store, "site-a")
    sites = RegisteredSites(memory_store)
    assert not sites.surely("site-a"), "before its listing: ask etcd"
    task = asyncio.create_task(sites.run())
    try:
        await until(lambda: sites.surely("site-a"))
        await gw.register(memory_store, "site-b")
        await until(lambda: sites.surely("site-b"))
        await memory_store.delete(keys.site("site-a"))
        await until(lambda: not sites.surely("site-a"))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_opening_reads_etcd_only_for_a_site_the_index_does_not_know(
    memory_store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await gw.register(memory_store, "site-a")
    gateway = gw.gateway_on(memory_store)
    assert gateway.sites is not None
    reads = spy.first_args(monkeypatch, memory_store, "get")
    assert await gateway._registered("site-a") and reads == [keys.site("site-a")]
    task = asyncio.create_task(gateway.sites.run())
    try:
        await until(lambda: gateway.sites is not None and gateway.sites.listed)
        reads.clear()
        assert await gateway._registered("site-a") and reads == []
        # registered a moment ago, not seen by the watch yet: etcd is asked, not refused
        await memory_store.put(keys.site("site-new"), b"{}")
        monkeypatch.setattr(gateway.sites, "surely", lambda site: False)
        assert await gateway._registered("site-new") and reads == [keys.site("site-new")]
        assert not await gateway._registered("site-unknown")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
