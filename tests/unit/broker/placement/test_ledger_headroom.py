"""VNF placement over the real quota ledger (MemoryStore): invariant 7 end to end in-process.

The VNF controller is driven step by step with a ``LedgerHeadroom``; agents are played by
writing ``observed/`` statuses. What is checked is what the ledger and the store hold.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from broker.controllers import deadlines
from broker.controllers.vnfs import VnfController
from broker.models import codec
from broker.models import vnf as model
from broker.quotas.headroom import LedgerHeadroom
from broker.placement.snapshot import Snapshot
from broker.quotas.ledgerstore import StoreLedger
from broker.store import keys
from broker.store.memory import MemoryStore
from quota.ledger import Ledger
from quota.models import TenantId, TenantQuota
from tests.support import placement as P

SITES = P.regions(2)
TENANT = TenantId("acme-nfv")  # the samples' tenant
VIMS = model.deltas(P.sample("vims"))  # 3 instances, 12 cores, ...
IDS = itertools.count(1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    store: MemoryStore
    ledger: Ledger
    headroom: LedgerHeadroom
    controller: VnfController
    clock: Clock


@pytest.fixture
async def w() -> AsyncIterator[World]:
    store = MemoryStore()
    await P.seed_store(store, SITES, P.paris_latency(SITES))
    clock = Clock()
    ledger = Ledger(StoreLedger(store), clock=clock)
    headroom = LedgerHeadroom(ledger, ttl=30, clock=clock)
    fence = await store.put(keys.LEADER, b"me")
    controller = VnfController(store, fence, headroom=headroom)
    controller.snap = await Snapshot.load(store)
    yield World(store, ledger, headroom, controller, clock)
    await ledger.close()
    await store.close()


async def limit(w: World, **limits: int) -> None:
    await w.ledger.set_quota(TENANT, TenantQuota(limits=limits))


async def submit(w: World, name: str = "vims") -> str:
    desc = P.sample(name)
    vnf_id = f"{desc.name}-{next(IDS):06d}"
    now = int(time.time() * 1000)
    record = model.VnfRecord(vnf_id, desc.tenant, model.to_json(desc), created_ms=now)
    await w.store.put(keys.vnf(vnf_id), codec.encode(record))
    await w.controller.step(vnf_id)
    return vnf_id


async def record(w: World, vnf_id: str) -> model.VnfRecord | None:
    kv = await w.store.get(keys.vnf(vnf_id))
    return codec.decode(model.VnfRecord, kv.value) if kv is not None else None


async def report(w: World, vnf_id: str, state: str, generation: int = 1) -> None:
    rec = await record(w, vnf_id)
    assert rec is not None
    for m in rec.members:
        server = f"{vnf_id}-{m.name}"
        status = {
            "kind": "server",
            "name": server,
            "observed_generation": generation,
            "state": state,
            "message": "no valid host" if state == "FAILED" else "",
            "outputs": {"host": m.host},
            "at_ms": 5,
        }
        await w.store.put(keys.observed(m.site, "server", server), json.dumps(status).encode())
    await w.controller.step(vnf_id)
    await w.controller.drain()


async def used(w: World, cls: str, site: str | None = None) -> int:
    return (await w.ledger.view(TENANT)).account.used(cls, site=site)


async def reserved(w: World, cls: str) -> int:
    return (await w.ledger.view(TENANT)).reserved.total.get(cls, 0)


async def test_over_quota_is_refused_naming_the_class_and_nothing_is_desired(w: World) -> None:
    await limit(w, cores=VIMS["cores"] - 1)
    vnf_id = await submit(w)
    rec = await record(w, vnf_id)
    assert rec is not None and rec.state is model.VnfState.FAILED
    assert "quota exceeded for cores" in rec.reason
    assert f"requested {VIMS['cores']}, {VIMS['cores'] - 1} left" in rec.reason
    assert rec.reservation == ""
    assert (await w.store.get_prefix(keys.DESIRED))[0] == []
    assert await reserved(w, "cores") == 0 and await used(w, "cores") == 0
    # the stored explain view carries the quota as its top-level reason, and the quota
    # checker (last in the chain) dropped every site of every VDU
    kv = await w.store.get(keys.placement(vnf_id))
    assert kv is not None
    explain = json.loads(kv.value)["explain"]
    assert not explain["feasible"] and explain["reason"].startswith("quota: ")
    assert "cores" in explain["quota"] and explain["vdus"]
    for vdu in explain["vdus"].values():
        assert vdu["sites_feasible"] == 0 and vdu["dropped_by"] == {"quota": vdu["sites_total"]}


async def test_active_commits_the_reservation_per_site_and_delete_gives_it_back(
    w: World,
) -> None:
    await limit(w, cores=VIMS["cores"] + 2)
    vnf_id = await submit(w)
    rec = await record(w, vnf_id)
    assert rec is not None
    assert rec.state is model.VnfState.PLACED, rec.reason
    assert rec.reservation == f"{TENANT}/vnf.{vnf_id}"
    assert await reserved(w, "cores") == VIMS["cores"] and await used(w, "cores") == 0
    # a second VIMS does not fit while the first holds its reservation
    second = await record(w, await submit(w))
    assert second is not None and second.state is model.VnfState.FAILED
    assert "cores" in second.reason and "2 left" in second.reason

    await report(w, vnf_id, "READY")
    rec = await record(w, vnf_id)
    assert rec is not None and rec.state is model.VnfState.ACTIVE
    assert await reserved(w, "cores") == 0 and await used(w, "cores") == VIMS["cores"]
    for site in {m.site for m in rec.members}:  # booked where the members run
        per_site = sum(
            P.sample("vims").vdu(m.vdu).virtual_compute.num_virtual_cpu
            for m in rec.members
            if m.site == site
        )
        assert await used(w, "cores", site) == per_site > 0
    assert await used(w, "instances") == VIMS["instances"]

    await w.store.put(keys.vnf(vnf_id), codec.encode(dataclasses.replace(rec, deleted=True)))
    await w.controller.step(vnf_id)  # tombstones
    assert await used(w, "cores") == VIMS["cores"]  # not before the servers are gone
    await report(w, vnf_id, "DELETED", generation=2)
    assert await record(w, vnf_id) is None
    assert await used(w, "cores") == 0 and await used(w, "instances") == 0
    assert await reserved(w, "cores") == 0


async def test_a_vnf_failed_for_good_releases_the_reservation(w: World) -> None:
    """Every member fails on its only allowed placement: nothing serves, the VNF is FAILED
    (a member given up while others serve is tests/unit/broker/controllers/test_deadlines)."""
    w.controller.limits = deadlines.Limits(max_attempts=1)
    await limit(w, cores=VIMS["cores"])
    vnf_id = await submit(w)
    assert await reserved(w, "cores") == VIMS["cores"]
    await report(w, vnf_id, "FAILED")
    rec = await record(w, vnf_id)
    assert rec is not None and rec.state is model.VnfState.FAILED
    assert "no valid host" in rec.reason
    await report(w, vnf_id, "DELETED", generation=2)
    rec = await record(w, vnf_id)
    assert rec is not None and rec.reservation == "" and rec.members == ()
    assert await reserved(w, "cores") == 0 and await used(w, "cores") == 0
    # the quota is free again: the same VNF places
    again = await record(w, await submit(w))
    assert again is not None
    assert again.state is model.VnfState.PLACED, again.reason


async def test_a_placed_vnf_keeps_its_reservation_alive(w: World) -> None:
    await limit(w, cores=VIMS["cores"])
    vnf_id = await submit(w)
    hold = f"{keys.QUOTA}holds/{TENANT}/vnf.{vnf_id}"
    first = await w.store.get(hold)
    assert first is not None and first.lease
    await w.controller.step(vnf_id)  # too early to renew: same lease
    assert (kv := await w.store.get(hold)) is not None and kv.lease == first.lease
    w.clock.now += w.headroom.ttl / 3 + 1
    await w.controller.step(vnf_id)  # still PLACED: renewed onto a fresh lease
    renewed = await w.store.get(hold)
    assert renewed is not None and renewed.lease != first.lease
    w.store.expire_lease(first.lease)
    assert await w.store.get(hold) is not None
    assert await reserved(w, "cores") == VIMS["cores"]


async def test_a_lapsed_reservation_that_no_longer_fits_fails_the_vnf(w: World) -> None:
    await limit(w, cores=VIMS["cores"])
    vnf_id = await submit(w)
    hold = await w.store.get(f"{keys.QUOTA}holds/{TENANT}/vnf.{vnf_id}")
    assert hold is not None
    w.store.expire_lease(hold.lease)  # no leader renewed it in time
    other = Ledger(StoreLedger(w.store))  # another replica takes a core meanwhile
    await other.reserve(TENANT, {"cores": 1}, 30)
    await other.close()
    w.clock.now += w.headroom.ttl
    await w.controller.step(vnf_id)
    await w.controller.drain()
    rec = await record(w, vnf_id)
    assert rec is not None and rec.state is model.VnfState.FAILED
    assert rec.reason.startswith("quota: ") and "cores" in rec.reason
    assert await used(w, "cores") == 0
