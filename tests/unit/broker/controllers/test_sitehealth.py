"""Site health over the in-memory store, with a hand-driven clock."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from broker import errors
from broker.controllers.sitehealth import SiteHealthController
from broker.models import codec
from broker.models.site import Health, SiteHealth, SiteSpec, SiteStatus
from broker.settings import BrokerSettings, HealthSettings
from broker.store import keys
from broker.store.memory import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def lead(store: MemoryStore, name: str = "b1") -> int:
    await store.put(keys.LEADER, name.encode())
    kv = await store.get(keys.LEADER)
    assert kv is not None
    return kv.create_revision


async def verdict(store: MemoryStore, site: str) -> SiteHealth | None:
    kv = await store.get(keys.health(site))
    return None if kv is None else codec.decode(SiteHealth, kv.value)


async def events(store: MemoryStore) -> list[dict[str, object]]:
    kvs, _ = await store.get_prefix(keys.EVENTS)
    return [json.loads(kv.value) for kv in kvs]


async def settle() -> None:
    """Let the controller's watch catch up (the fake store delivers asynchronously)."""
    for _ in range(5):
        await asyncio.sleep(0.01)


async def state_of(store: MemoryStore, site: str, want: Health) -> SiteHealth:
    for _ in range(200):
        v = await verdict(store, site)
        if v is not None and v.state is want:
            return v
        await asyncio.sleep(0.01)
    raise AssertionError(f"{site} never became {want}")


@pytest.fixture
async def setup(memory_store: MemoryStore):  # type: ignore[no-untyped-def]
    store = memory_store
    for site in ("a", "b"):
        await store.put(keys.site(site), codec.encode(SiteSpec(id=site, region="r")))
    fence = await lead(store)
    clock = Clock()
    settings = BrokerSettings(name="b1", health=HealthSettings(down_after=3.0, sweep_interval=3600))
    ctl = SiteHealthController(store, settings, fence, clock=clock)
    task = asyncio.create_task(ctl.run())
    await settle()
    yield store, ctl, clock, fence
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_status_up_then_closed_stream_down(setup) -> None:  # type: ignore[no-untyped-def]
    store, _ctl, _clock, fence = setup
    await store.put(keys.sitestatus("a"), b"{}")
    v = await state_of(store, "a", Health.UP)
    assert v.fence == fence and v.decided_by == "b1"
    await store.delete(keys.sitestatus("a"))
    v = await state_of(store, "a", Health.DOWN)
    assert "stream closed" in v.reason
    kinds = [(e["kind"], e["subject"]) for e in await events(store)]
    assert kinds == [("site.up", "a"), ("site.down", "a")]


def status(site: str, silent_since_ms: int = 0) -> bytes:
    return codec.encode(
        SiteStatus(
            site=site,
            replica="gw-1",
            session_id="s1",
            protocol="1.1",
            agent_version="t",
            connected_ms=1,
            last_heartbeat_ms=2,
            silent_since_ms=silent_since_ms,
        )
    )


async def test_a_record_saying_silent_goes_down_once_and_back_up(setup) -> None:  # type: ignore[no-untyped-def]
    store, ctl, clock, _ = setup
    await store.put(keys.sitestatus("a"), status("a"))
    await state_of(store, "a", Health.UP)
    clock.now += 60  # the leader times nothing while a live record exists
    await ctl.sweep()
    assert (await verdict(store, "a")).state is Health.UP  # type: ignore[union-attr]
    await store.put(keys.sitestatus("a"), status("a", silent_since_ms=int(time.time() * 1000)))
    v = await state_of(store, "a", Health.DOWN)
    assert "no heartbeat" in v.reason and "gw-1" in v.reason
    await store.put(keys.sitestatus("a"), status("a", silent_since_ms=1))  # still silent
    await settle()
    assert [e["kind"] for e in await events(store)] == ["site.up", "site.down"]
    # heard again: the replica clears the mark
    await store.put(keys.sitestatus("a"), status("a"))
    await state_of(store, "a", Health.UP)


async def test_an_up_site_without_a_record_goes_down_after_the_grace(
    memory_store: MemoryStore,
) -> None:
    """Only the sites without a record are timed (``unheard``), each judged once: a
    site whose record is there costs the sweep nothing."""
    store = memory_store
    for site in ("a", "b"):
        await store.put(keys.site(site), codec.encode(SiteSpec(id=site, region="r")))
        up = SiteHealth(site=site, state=Health.UP, since_ms=1, decided_by="old")
        await store.put(keys.health(site), codec.encode(up))  # the last leader's verdict
    status = SiteStatus("b", "r1", "s-b", "1.2", "test", 1, 1)
    await store.put(keys.sitestatus("b"), codec.encode(status))
    fence, clock = await lead(store), Clock()
    settings = BrokerSettings(name="b1", health=HealthSettings(down_after=3.0, sweep_interval=3600))
    ctl = SiteHealthController(store, settings, fence, clock=clock)
    task = asyncio.create_task(ctl.run())
    try:
        await settle()
        assert set(ctl.unheard) == {"a"} and ctl.live == {"b"}
        await ctl.sweep()
        assert (await verdict(store, "a")).state is Health.UP  # type: ignore[union-attr]
        clock.now += 3.1
        await ctl.sweep()
        v = await verdict(store, "a")
        assert v is not None and v.state is Health.DOWN and "no live session" in v.reason
        assert not ctl.unheard
        assert (await verdict(store, "b")).state is Health.UP  # type: ignore[union-attr]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_never_connected_site_stays_unknown(setup) -> None:  # type: ignore[no-untyped-def]
    store, ctl, clock, _ = setup
    clock.now += 60
    await ctl.sweep()
    assert await verdict(store, "b") is None
    assert await events(store) == []


async def test_deposed_leader_cannot_write(memory_store: MemoryStore) -> None:
    store = memory_store
    await store.put(keys.site("a"), codec.encode(SiteSpec(id="a", region="r")))
    old_fence = await lead(store, "old")
    await store.delete(keys.LEADER)
    await lead(store, "new")
    ctl = SiteHealthController(store, BrokerSettings(name="old"), old_fence)
    await store.put(keys.sitestatus("a"), b"{}")
    with pytest.raises(errors.FencedOut):  # the first verdict (a: UP, connected)
        await asyncio.wait_for(ctl.run(), 10.0)
    assert await verdict(store, "a") is None
    assert await events(store) == []


class SlowTxns(MemoryStore):
    """Every transaction takes a while, as etcd does under a connect storm."""

    txns = 0

    async def txn(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        self.txns += 1
        await asyncio.sleep(0.02)
        return await super().txn(*args, **kwargs)  # type: ignore[arg-type]


async def test_a_reconnect_storm_is_judged_in_batches_without_false_downs() -> None:
    store = SlowTxns()
    sites = [f"s{i:03d}" for i in range(300)]
    for site in sites:
        await store.put(keys.site(site), codec.encode(SiteSpec(id=site, region="r")))
    fence = await lead(store)
    clock = Clock()
    settings = BrokerSettings(name="b1", health=HealthSettings(down_after=3.0, sweep_interval=0.05))
    ctl = SiteHealthController(store, settings, fence, clock=clock)
    task = asyncio.create_task(ctl.run())
    try:
        await settle()
        for site in sites:  # every agent reconnects at once
            await store.put(keys.sitestatus(site), b"{}")
        for _ in range(500):
            if all(ctl.health.get(s) is Health.UP for s in sites):
                break
            await asyncio.sleep(0.01)
        assert all(ctl.health.get(s) is Health.UP for s in sites)
        # one transaction per site would be 300 (and 6 s of watch backlog at 20 ms each)
        assert store.txns <= 30, f"{store.txns} transactions for {len(sites)} verdicts"
        # heartbeats keep coming while time passes: nobody may go DOWN
        for _ in range(3):
            clock.now += 2.0
            for site in sites:
                await store.put(keys.sitestatus(site), b"{}")
            await settle()
        assert {e["kind"] for e in await events(store)} == {"site.up"}
        assert len(await events(store)) == len(sites)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_verdicts_for_one_site_are_written_in_the_order_decided(setup) -> None:  # type: ignore[no-untyped-def]
    store, ctl, _clock, _ = setup
    ctl._decide("a", Health.UP, "one")
    ctl._decide("a", Health.DOWN, "two")
    ctl._decide("b", Health.UP, "three")
    ctl._decide("a", Health.UP, "four")
    await ctl.flush()
    written = await events(store)  # sorted by id: time, then a random part
    assert [e["kind"] for e in written if e["subject"] == "a"] == [
        "site.up",
        "site.down",
        "site.up",
    ]
    assert [e["kind"] for e in written if e["subject"] == "b"] == ["site.up"]
    assert (await verdict(store, "a")).state is Health.UP  # type: ignore[union-attr]
