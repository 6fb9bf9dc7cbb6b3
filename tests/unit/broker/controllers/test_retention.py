"""Event retention over the in-memory store: age and count bounds, fenced deletes."""

from __future__ import annotations

import dataclasses

import pytest

from broker import errors
from broker.controllers.retention import BATCH, EventRetention
from broker.models import codec
from broker.models.event import Event
from broker import settings
from broker.settings import BrokerSettings, EventSettings
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.unit.broker.controllers.test_sitehealth import lead

NOW_S = 1_700_000_000.0


async def seed(store: MemoryStore, ages_s: list[float]) -> list[str]:
    ids = []
    for i, age in enumerate(ages_s):
        at = int((NOW_S - age) * 1000)
        event = Event(id=f"{at:013d}-{i:08x}", at_ms=at, kind="site.up", subject="e", message="")
        await store.put(keys.event(event.id), codec.encode(event))
        ids.append(event.id)
    return ids


def retention(store: MemoryStore, fence: int, **events: float) -> EventRetention:
    settings = dataclasses.replace(BrokerSettings(), events=EventSettings(**events))  # type: ignore[arg-type]
    return EventRetention(store, settings, fence, clock=lambda: NOW_S)


async def remaining(store: MemoryStore) -> list[str]:
    kvs, _ = await store.get_prefix(keys.EVENTS)
    return [keys.name_in(keys.EVENTS, kv.key) for kv in kvs]


async def test_older_than_the_age_bound_are_trimmed() -> None:
    store = MemoryStore()
    fence = await lead(store)
    ids = await seed(store, [7200, 3601, 3599, 10, 0])
    assert await retention(store, fence, retain_seconds=3600).trim() == 2
    assert await remaining(store) == ids[2:]


async def test_beyond_the_count_the_oldest_are_trimmed_in_batches() -> None:
    store = MemoryStore()
    fence = await lead(store)
    ids = await seed(store, [float(1000 - i) for i in range(BATCH * 2 + 5)])
    assert await retention(store, fence, retain_count=3).trim() == len(ids) - 3
    assert await remaining(store) == ids[-3:]
    assert await retention(store, fence, retain_count=3).trim() == 0


async def test_a_deposed_leader_trims_nothing() -> None:
    store = MemoryStore()
    fence = await lead(store)
    ids = await seed(store, [9000, 8000])
    await store.delete(keys.LEADER)
    await lead(store, "b2")
    with pytest.raises(errors.FencedOut):
        await retention(store, fence, retain_seconds=60).trim()
    assert await remaining(store) == ids


@pytest.mark.parametrize(
    ("field", "value"), [("retain_seconds", "0"), ("retain_count", "0"), ("trim_interval", "-1")]
)
def test_nonsense_retention_is_refused_naming_the_setting(field: str, value: str) -> None:
    with pytest.raises(errors.SettingsError) as caught:
        settings.load(env={f"MERIDIAN_EVENTS__{field.upper()}": value})
    assert f"events.{field}" in str(caught.value)
