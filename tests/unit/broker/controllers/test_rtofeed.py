"""The real failovers' recovery times reach ``reports/rto`` once each (issue 11): a
second round, or the next leader's, counts nothing twice; a deposed leader writes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broker import errors
from broker.controllers import rtofeed
from broker.models import codec, event
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.unit.broker.controllers.test_failover_controller import lead


async def log(store: MemoryStore, at: int, kind: str, subject: str, msg: str = "") -> None:
    e = event.new(kind, subject, msg, at_ms=at)
    await store.put(keys.event(e.id), codec.encode(e))


async def kept(store: MemoryStore) -> dict[str, Any]:
    kv = await store.get(keys.RTO_MEASURED)
    assert kv is not None
    doc: dict[str, Any] = json.loads(kv.value)
    return doc


async def test_each_failover_is_counted_once_across_rounds_and_leaders(
    memory_store: MemoryStore,
) -> None:
    feed = rtofeed.RtoFeed(memory_store, await lead(memory_store))
    await log(memory_store, 10_000, "vnf.member_lost", "a", "fw-0@s1: site s1 DOWN")
    await log(memory_store, 12_500, "vnf.failover_completed", "a")
    assert await feed.feed() == 1
    doc = await kept(memory_store)
    assert doc["promote_samples"] == [2.5] and "restore_s" not in doc
    await log(memory_store, 70_000, "vnf.healed", "a")  # next round: the restore only
    assert await feed.feed() == 1
    assert await feed.feed() == 0, "nothing new: nothing counted again"
    nxt = rtofeed.RtoFeed(memory_store, await lead(memory_store))
    assert await nxt.feed() == 0, "the next leader resumes from the stored cursor"
    doc = await kept(memory_store)
    assert doc["promote_samples"] == [2.5] and doc["restore_samples"] == [60.0]
    assert (doc["promote_s"], doc["restore_s"]) == (2.5, 60.0)
    with pytest.raises(errors.BrokerError):
        await log(memory_store, 80_000, "vnf.member_lost", "b", "x")
        await feed.feed()  # deposed: its fence is the old campaign's
