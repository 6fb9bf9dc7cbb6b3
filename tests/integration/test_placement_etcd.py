"""Placement on real etcd: concurrent placements never double-book a NUMA cell.

Several placers, each with its own snapshot (as separate leaders-in-waiting or worker
tasks would have), commit plans at once over tight sites; afterwards the claims in etcd
are summed cell by cell against the inventories. Then the same through the API and the
VNF controller. A placer whose snapshot was stale must conflict and retry, never land.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from broker.controllers.vnfs import VnfController
from broker.models import codec
from broker.models import vnf as model
from broker.models.inventory import Inventory
from broker.placement import claims as cl
from broker.placement import commit
from broker.placement.plan import Planner
from broker.placement.snapshot import Snapshot
from broker.store import keys
from broker.store.etcd import EtcdStore
from tests.support import placement as P
from tests.support.placement import CellShape, SiteDef
from tests.unit.broker.api.apitest_support import ADMIN, client_for

pytestmark = [pytest.mark.etcd]

TIGHT = CellShape(cpus=12, pcpus=8, memory_mb=32768, pages_2m=2048, pages_1g=8, vfs={"physnet1": 4})
SITES = [
    SiteDef(f"s{r}-{i}", f"region-{r}", hosts=2, shapes=(TIGHT, TIGHT))
    for r in (1, 2, 3)
    for i in range(2)
]


async def become_leader(store: EtcdStore) -> int:
    await store.put(keys.LEADER, b"test-leader")
    kv = await store.get(keys.LEADER)
    assert kv is not None
    return kv.create_revision


async def assert_no_double_booking(store: EtcdStore) -> dict[str, cl.Claim]:
    invs = {
        kv.key: codec.decode(Inventory, kv.value)
        for kv in (await store.get_prefix(keys.INVENTORY))[0]
    }
    every: dict[str, cl.Claim] = {}
    snap = Snapshot()
    for key, inv in invs.items():
        snap.apply(key, codec.encode(inv), 1)
    for kv in (await store.get_prefix(keys.CLAIMS))[0]:
        site = snap.sites[kv.key[len(keys.CLAIMS) :]]
        for member, claim in cl.decode(kv.value).items():
            assert member not in every, f"{member} claimed twice"
            every[member] = claim
            cl.take(site.host_by_name[claim.host], claim)
    for site in snap.sites.values():
        for host in site.hosts:
            for c in host.cells:
                assert c.pcpus_free >= 0 and c.vcpus_free >= 0 and c.mem_free >= 0, host.name
                assert all(v >= 0 for v in (*c.pages.values(), *c.vfs.values())), host.name
    return every


async def placer(
    store: EtcdStore, fence: int, names: list[str], desc: model.Descriptor, stats: dict[str, int]
) -> None:
    snap = await Snapshot.load(store)
    follow = asyncio.create_task(snap.follow(store))
    try:
        for vnf_id in names:
            for _ in range(50):
                result = Planner().plan(snap, desc, vnf_id)
                if not result.feasible:
                    stats["infeasible"] += 1
                    break
                outcome = await commit.commit(store, fence, snap, result, [])
                if outcome.landed:
                    stats["placed"] += 1
                    break
                stats["conflicts"] += 1
            await asyncio.sleep(0)
    finally:
        follow.cancel()


async def test_concurrent_placers_never_double_book(etcd_store: EtcdStore) -> None:
    await P.seed_store(etcd_store, SITES, P.paris_latency(SITES))
    fence = await become_leader(etcd_store)
    desc = P.sample("vfirewall")  # 4 pinned cores, 8 GiB in 1G pages, 2 VFs, 2 sites
    stats = {"placed": 0, "conflicts": 0, "infeasible": 0}
    await asyncio.gather(
        *(placer(etcd_store, fence, [f"p{w}-{i}" for i in range(8)], desc, stats) for w in range(4))
    )
    claims = await assert_no_double_booking(etcd_store)
    # 6 sites x 2 hosts x 2 cells, each cell holds exactly 1 firewall member (8 GiB of
    # 1 GiB pages): 24 members = 12 firewalls fit, the other 20 requests must not
    assert stats["placed"] == 12 and len(claims) == 24, stats
    assert stats["conflicts"] > 0, "the placers never raced: the test proves nothing"
    assert stats["infeasible"] == 20


async def test_stale_plan_does_not_land(etcd_store: EtcdStore) -> None:
    await P.seed_store(etcd_store, SITES[:2])
    fence = await become_leader(etcd_store)
    one, two = await Snapshot.load(etcd_store), await Snapshot.load(etcd_store)
    desc = P.sample("vfirewall")
    first = Planner().plan(one, desc, "a")
    second = Planner().plan(two, desc, "b")  # the same cells, planned on the same view
    assert (await commit.commit(etcd_store, fence, one, first, [])).landed
    assert not (await commit.commit(etcd_store, fence, two, second, [])).landed
    # the failure branch brought ``two`` up to date: its next plan avoids a's cells
    third = Planner().plan(two, desc, "b")
    taken = {(a.site, a.claim.host, a.claim.cell) for a in first.assignments}
    assert not taken & {(a.site, a.claim.host, a.claim.cell) for a in third.assignments}
    assert (await commit.commit(etcd_store, fence, two, third, [])).landed
    await assert_no_double_booking(etcd_store)


@pytest.mark.slow
async def test_concurrent_api_placements_never_double_book(etcd_store: EtcdStore) -> None:
    await P.seed_store(etcd_store, SITES, P.paris_latency(SITES))
    fence = await become_leader(etcd_store)
    controller = VnfController(etcd_store, fence, concurrency=8)
    running = asyncio.create_task(controller.run())
    body = json.loads(json.dumps(model.to_json(P.sample("vims"))))
    body["vdus"][0]["virtual_compute"]["num_virtual_cpu"] = 16  # 1 per cell (16 vCPUs)
    try:
        async with client_for(etcd_store) as api:
            # what must stop the extra VNFs here is capacity, not the tenant's quota
            unlimited = {"limits": {"cores": -1, "ram_mb": -1, "instances": -1, "ports": -1}}
            resp = await api.put("/v1/quotas/acme-nfv", json=unlimited, headers=ADMIN)
            assert resp.status_code == 200, resp.text
            answers = await asyncio.gather(
                *(api.post("/v1/vnfs", json=body, headers=ADMIN) for _ in range(12))
            )
            accepted = [a.json()["id"] for a in answers if a.status_code == 202]
            assert accepted, [a.text for a in answers]

            async def states() -> dict[str, str]:
                got = await asyncio.gather(
                    *(api.get(f"/v1/vnfs/{v}", headers=ADMIN) for v in accepted)
                )
                return {v: g.json()["state"] for v, g in zip(accepted, got, strict=True)}

            for _ in range(200):
                seen = await states()
                if all(s in ("PLACED", "FAILED") for s in seen.values()):
                    break
                await asyncio.sleep(0.05)
            assert all(s in ("PLACED", "FAILED") for s in seen.values()), seen
            placed = [v for v, s in seen.items() if s == "PLACED"]
            # a region has 2 sites x 2 hosts x 2 cells of 16 shared vCPUs: 8 members per
            # region, one per region per vIMS, so exactly 8 of the 12 fit
            assert len(placed) == 8, seen
            failed = [v for v, s in seen.items() if s == "FAILED"]
            why = (await api.get(f"/v1/vnfs/{failed[0]}", headers=ADMIN)).json()["reason"]
            assert "no feasible plan" in why
            claims = await assert_no_double_booking(etcd_store)
            assert len(claims) == 3 * len(placed)
            explain = (await api.get(f"/v1/vnfs/{placed[0]}/explain", headers=ADMIN)).json()
            assert len(explain["assignments"]) == 3
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
