"""Quota sync over the in-memory store: continuous per-site push, drift, fencing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from broker import errors
from broker.controllers.quotasync import QuotaMetrics, QuotaSyncConfig, QuotaSyncController
from broker.models import codec
from broker.models.site import SiteSpec
from broker.quotas.ledgerstore import StoreLedger
from broker.settings import BrokerSettings
from broker.store import keys
from broker.store.memory import MemoryStore
from quota.ledger import Ledger
from quota.models import TenantId, TenantQuota
from tests.support import spy

T = TenantId("tenant-q")


@pytest.fixture
async def mem() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    yield store
    await store.close()


async def lead(mem: MemoryStore, name: str = "broker-1") -> int:
    await mem.put(keys.LEADER, name.encode())
    kv = await mem.get(keys.LEADER)
    assert kv is not None
    return kv.create_revision


async def desired(mem: MemoryStore, site: str) -> dict[str, Any] | None:
    kv = await mem.get(keys.desired(site, "quota", T))
    return None if kv is None else dict(json.loads(kv.value))


async def eventually(check: Callable[[], Any], within: float = 3.0) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {within}s: {check.__name__}")
        await asyncio.sleep(0.02)


async def test_push_is_continuous_and_drift_is_recorded(mem: MemoryStore) -> None:
    fence = await lead(mem)
    for site, region in (("edge-a", "eu"), ("edge-b", "eu"), ("edge-c", "us")):
        await mem.put(keys.site(site), codec.encode(SiteSpec(id=site, region=region)))
    ledger = Ledger(StoreLedger(mem))
    await ledger.set_quota(T, TenantQuota(limits={"cores": 10, "instances": -1}))
    r = await ledger.reserve(T, {"cores": 3}, 30, site="edge-a", region="eu")
    await ledger.commit(T, r.id)

    metrics = QuotaMetrics()
    controller = QuotaSyncController(
        mem, BrokerSettings(name="broker-1"), fence,
        config=QuotaSyncConfig(drift_grace=0.3, headroom={}), metrics=metrics,
    )
    task = asyncio.create_task(controller.run())
    try:
        async def pushed() -> bool:
            a, b = await desired(mem, "edge-a"), await desired(mem, "edge-b")
            return bool(a and b and a["spec"]["limits"]["cores"] == 10
                        and b["spec"]["limits"]["cores"] == 7)

        await eventually(pushed)
        first = await desired(mem, "edge-b")
        assert first is not None and first["spec"]["project"] == T
        assert first["spec"]["limits"]["instances"] == -1

        # two servers' worth of cores created at edge-c behind the broker's back
        await mem.put(keys.usage("edge-c"), json.dumps({T: {"cores": 2}}).encode())

        async def shrunk() -> bool:
            b = await desired(mem, "edge-b")
            return bool(b and b["spec"]["limits"]["cores"] == 5)

        await eventually(shrunk)
        after = await desired(mem, "edge-b")
        assert after is not None and after["generation"] == first["generation"] + 1

        async def drift_recorded() -> bool:
            view = await ledger.view(T)
            return view.account.used("cores") == 5

        await eventually(drift_recorded)
        events, _ = await mem.get_prefix(keys.EVENTS)
        kinds = [json.loads(kv.value) for kv in events]
        assert any(e["kind"] == "quota.drift" and e["subject"] == T for e in kinds), kinds
        assert metrics.drift.labels("cores")._value.get() == 2
        # admission now counts what really exists: 10 - 3 committed - 2 out of band
        await ledger.reserve(T, {"cores": 5}, 30)
        with pytest.raises(Exception, match="quota exceeded"):
            await ledger.reserve(T, {"cores": 1}, 30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_deposed_leader_cannot_push(mem: MemoryStore) -> None:
    stale = await lead(mem, "broker-old")
    await mem.delete(keys.LEADER)
    await lead(mem, "broker-new")
    await mem.put(keys.site("edge-a"), codec.encode(SiteSpec(id="edge-a", region="eu")))
    await Ledger(StoreLedger(mem)).set_quota(T, TenantQuota(limits={"cores": 4}))
    controller = QuotaSyncController(mem, BrokerSettings(name="broker-old"), stale)
    await controller.load()
    with pytest.raises(errors.FencedOut):
        await controller.push(T)
    assert await desired(mem, "edge-a") is None


async def test_a_project_only_seen_in_usage_reports_keeps_the_sites_own_quota(
    mem: MemoryStore,
) -> None:
    """Drift is recorded for it, but no quota is pushed: Meridian does not manage it."""
    fence = await lead(mem)
    await mem.put(keys.site("edge-a"), codec.encode(SiteSpec(id="edge-a", region="eu")))
    await mem.put(keys.usage("edge-a"), json.dumps({T: {"instances": 1}}).encode())
    controller = QuotaSyncController(
        mem, BrokerSettings(name="broker-1"), fence,
        config=QuotaSyncConfig(drift_grace=0.05, headroom={}),
    )
    task = asyncio.create_task(controller.run())
    try:
        async def drift_recorded() -> bool:
            view = await Ledger(StoreLedger(mem)).view(T)
            return view.account.used("instances") == 1

        await eventually(drift_recorded)

        async def absorbed() -> bool:  # the controller's own view holds the adjustment
            return T in controller.accounts

        await eventually(absorbed)
        await controller.process({T})
        assert await desired(mem, "edge-a") is None
        # once Meridian manages it (a quota is set), the push follows
        await Ledger(StoreLedger(mem)).set_quota(T, TenantQuota(limits={"instances": 5}))

        async def pushed() -> bool:
            found = await desired(mem, "edge-a")
            return bool(found and found["spec"]["limits"]["instances"] == 5)

        await eventually(pushed)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_new_leader_reads_what_was_pushed_in_one_listing_not_one_per_site(
    mem: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fence = await lead(mem)
    sites = [f"edge-{i:03d}" for i in range(200)]
    for site in sites:
        await mem.put(keys.site(site), codec.encode(SiteSpec(id=site, region="eu")))
    await Ledger(StoreLedger(mem)).set_quota(T, TenantQuota(limits={"cores": 4}))
    pushed_before = QuotaSyncController(mem, BrokerSettings(name="broker-1"), fence)
    await pushed_before.load()
    await pushed_before.push(T)
    await mem.put(keys.desired("edge-001", "vnf", "other"), b"{}")  # another kind: skipped
    listings = spy.first_args(monkeypatch, mem, "get_prefix")
    controller = QuotaSyncController(mem, BrokerSettings(name="broker-1"), fence)
    await controller.load()
    assert sum(p.startswith(keys.DESIRED) for p in listings) == 1, listings
    assert controller.pushed == pushed_before.pushed
    assert {site for site, _ in controller.pushed} == set(sites)
