"""Quota drift on real etcd: the ledger and the leader's quota sync, as the broker runs them.

Invariant 12: a sim site reports no usage for ``pinned_cores``, ``hugepages_mb`` or
``sriov_vfs``; that is unknown, not zero. Before the fix, about ``drift_grace`` after a
VNF's commit the sync recorded "pinned_cores reported 0 vs committed 4", the ledger's
usage of them fell to 0 and a second VNF over the limit was admitted. And one site's
report moves another tenant's ledger and shares by a bounded step per record.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from broker.controllers.quotasync import QuotaSyncConfig, QuotaSyncController
from broker.quotas.ledgerstore import StoreLedger
from broker.settings import BrokerSettings
from broker.store import keys
from broker.store.etcd import EtcdStore
from quota import errors, sync
from quota.ledger import Ledger
from quota.models import Account, TenantId, TenantQuota
from tests.support import gateway as gateway_support

pytestmark = [pytest.mark.etcd]

T = TenantId("tenant-nfv")
V = TenantId("tenant-victim")
VNF = {"instances": 1, "cores": 4, "ram_mb": 4096, "pinned_cores": 4, "hugepages_mb": 2048}
SIM_REPORT = {"instances": 1, "cores": 4, "ram_mb": 4096}  # what a sim site counts
GRACE = 0.3


async def ledger_kv(store: EtcdStore, tenant: str) -> tuple[bytes, int]:
    kv = await store.get(keys.QUOTA + f"ledger/{tenant}")
    assert kv is not None
    return kv.value, kv.mod_revision


async def account(store: EtcdStore, tenant: str) -> Account:
    return Account.parse(json.loads((await ledger_kv(store, tenant))[0]))


async def drift_events(store: EtcdStore) -> list[dict[str, Any]]:
    items, _ = await store.get_prefix(keys.EVENTS)
    return [e for e in (json.loads(kv.value) for kv in items) if e["kind"] == "quota.drift"]


@pytest.fixture
async def federation(etcd_store: EtcdStore) -> AsyncIterator[tuple[Ledger, int]]:
    fence = await etcd_store.put(keys.LEADER, b"broker-1")  # a fresh key: created here
    await gateway_support.register(etcd_store, "site-001", "site-002")  # region r1
    ledger = Ledger(StoreLedger(etcd_store))
    yield ledger, fence
    await ledger.close()


async def run_sync(store: EtcdStore, fence: int, grace: float = GRACE) -> asyncio.Task[None]:
    controller = QuotaSyncController(
        store, BrokerSettings(name="broker-1"), fence,
        config=QuotaSyncConfig(drift_grace=grace, headroom={}),
    )
    return asyncio.create_task(controller.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_unreported_classes_are_unknown_never_zero(
    federation: tuple[Ledger, int], etcd_store: EtcdStore
) -> None:
    ledger, fence = federation
    await ledger.set_quota(T, TenantQuota(limits={"pinned_cores": 8, "hugepages_mb": 4096}))
    first = await ledger.reserve(T, VNF, 60, site="site-001", region="r1")
    await ledger.commit(T, first.id)
    before = await ledger_kv(etcd_store, T)
    task = await run_sync(etcd_store, fence)
    try:
        # the VNF is ACTIVE at the sim site, which reports what it counts, again and again
        for _ in range(3):
            await etcd_store.put(keys.usage("site-001"), json.dumps({T: SIM_REPORT}).encode())
            await asyncio.sleep(GRACE * 4)
    finally:
        await stop(task)
    assert await ledger_kv(etcd_store, T) == before, "nothing recorded into the ledger"
    assert not [e for e in await drift_events(etcd_store) if "pinned_cores" in e["message"]]
    used = (await account(etcd_store, T)).sites["site-001"]
    assert (used.effective("pinned_cores"), used.effective("hugepages_mb")) == (4, 2048)
    # a second VNF that would take the tenant to 8 + 4 pinned cores is refused
    with pytest.raises(errors.QuotaExceeded, match="pinned_cores"):
        await ledger.reserve(T, {**VNF, "pinned_cores": 8}, 60, site="site-001")
    assert await ledger_kv(etcd_store, T) == before


async def test_a_report_that_drops_a_class_it_counts_is_still_drift(
    federation: tuple[Ledger, int], etcd_store: EtcdStore
) -> None:
    """The fix is not "never drift": cores the site counts and no longer has are recorded."""
    ledger, fence = federation
    first = await ledger.reserve(T, VNF, 60, site="site-001", region="r1")
    await ledger.commit(T, first.id)
    # the server was deleted behind the broker's back; another project still runs there
    report = {"other-project": {"instances": 1, "cores": 2, "ram_mb": 1024}}
    await etcd_store.put(keys.usage("site-001"), json.dumps(report).encode())
    task = await run_sync(etcd_store, fence)
    try:
        for _ in range(100):
            adjust = (await account(etcd_store, T)).sites["site-001"].adjust
            if adjust:
                break
            await asyncio.sleep(0.1)
    finally:
        await stop(task)
    assert dict(adjust) == {"instances": -1, "cores": -4, "ram_mb": -4096}


async def test_one_report_moves_another_tenants_ledger_a_bounded_step(
    federation: tuple[Ledger, int], etcd_store: EtcdStore
) -> None:
    ledger, fence = federation
    await ledger.set_quota(V, TenantQuota(limits={"cores": 100}))
    placed = await ledger.reserve(V, {"cores": 10}, 60, site="site-001", region="r1")
    await ledger.commit(V, placed.id)
    # site-002's agent claims the victim runs a million cores there
    lie = {V: {"cores": 1_000_000}}
    await etcd_store.put(keys.usage("site-002"), json.dumps(lie).encode())
    task = await run_sync(etcd_store, fence, grace=3.0)
    try:
        async def pushed() -> int:
            kv = await etcd_store.get(keys.desired("site-001", "quota", V))
            return -1 if kv is None else int(json.loads(kv.value)["spec"]["limits"]["cores"])

        for _ in range(200):
            if await drift_events(etcd_store):
                break
            await asyncio.sleep(0.05)
        step = sync.DRIFT_STEP["cores"]
        for _ in range(40):  # the push that follows the record (well before the next one)
            share = await pushed()
            if share == 100 - 2 * step:
                break
            await asyncio.sleep(0.05)
    finally:
        await stop(task)
    adjust = (await account(etcd_store, V)).sites["site-002"].adjust
    assert dict(adjust) == {"cores": step}, "one record, one bounded step"
    assert "bounded" in (await drift_events(etcd_store))[0]["message"]
    # the victim's share at site-001 shrank by the ledger's step and one more, not to 0
    assert share == 100 - 2 * step
    left = 100 - 10 - step
    found = await ledger.reserve(V, {"cores": left}, 60)
    assert found.state == "reserved"
