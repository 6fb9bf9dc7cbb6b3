"""What-if decisions on hand-built snapshots: absorbable, not, quota-bound, image-bound."""

from __future__ import annotations

from typing import Any

import dataclasses

import numpy as np
import pytest

from broker import errors
from broker.drills import imagetable, whatif
from broker.failover import replace as rp
from broker.models import vnf as model
from broker.placement.snapshot import Snapshot
from broker.settings import BrokerSettings
from tests.support import drills as D
from tests.support import placement as P
from replication import catalog as cat
from tests.support.placement import CellShape, SiteDef

SETTINGS = BrokerSettings()
RTO = whatif.Rto(detect_s=3.0, promote_s=2.0, restore_s=100.0)
TINY = CellShape(cpus=2, pcpus=1, memory_mb=1024, pages_1g=0, vfs={"physnet1": 0})


def world(n: int, tiny: tuple[str, ...] = ()) -> Snapshot:
    return P.world(
        [
            SiteDef(
                f"s{i}",
                "r1",
                hosts=2,
                shapes=(TINY, TINY) if f"s{i}" in tiny else (CellShape(), CellShape()),
            )
            for i in range(1, n + 1)
        ]
    )


def fw(**redundancy: Any) -> model.Descriptor:
    raw = P.sample("vfirewall").model_dump(by_alias=True)
    if redundancy:
        raw["vdus"][0]["redundancy"] = {**raw["vdus"][0]["redundancy"], **redundancy}
    return model.parse(raw)


def state(snap: Snapshot) -> tuple[object, ...]:
    free = tuple(
        (h.name, tuple((c.pcpus_free, c.vcpus_free, c.mem_free) for c in h.cells))
        for s in snap.order
        for h in s.hosts
    )
    return free, snap.up.tobytes()


def placed_fw(snap: Snapshot, desc: model.Descriptor | None = None) -> whatif.Placed:
    p = D.place(snap, desc or fw(), "vnf-1")
    assert p is not None
    return p


def active_site(p: whatif.Placed) -> str:
    return next(m.site for m in p.record.members if m.role == "active")


def one(result: whatif.Result) -> whatif.Outcome:
    assert len(result.vnfs) == 1
    return result.vnfs[0]


def run(snap: Snapshot, p: whatif.Placed, scope: whatif.Scope, **kw: Any) -> whatif.Result:
    return whatif.run(snap, [p], scope, SETTINGS, rto=RTO, **kw)


def test_absorbable_promotes_and_replaces_elsewhere_leaving_the_snapshot_as_it_was() -> None:
    snap = world(3)
    p = placed_fw(snap)
    lost = active_site(p)
    standby = next(m for m in p.record.members if m.role == "standby")
    before = state(snap)
    result = run(snap, p, whatif.Scope(sites=(lost,)))
    out = one(result)
    assert result.absorbable and out.service == "kept" and out.state == "ACTIVE"
    assert out.promotions == [{"member": standby.name, "site": standby.site}]
    [new] = out.replacements
    assert new["site"] not in (lost, standby.site)  # anti-affinity (site) with the standby
    assert new["role"] == "standby" and new["host"] and new["numa_cell"] in (0, 1)
    assert out.rto_s == 5.0
    assert state(snap) == before


def test_not_absorbable_anti_affinity_leaves_the_vnf_degraded() -> None:
    snap = world(2)
    p = placed_fw(snap)
    out = one(run(snap, p, whatif.Scope(sites=(active_site(p),))))
    assert out.service == "kept" and out.state == "DEGRADED" and out.promotions
    [why] = out.cannot_restore
    assert why["kind"] == rp.ANTI_AFFINITY, why


def test_not_absorbable_capacity_reports_the_shortfall_per_class() -> None:
    snap = world(3, tiny=("s3",))
    p = placed_fw(snap)
    assert {m.site for m in p.record.members} == {"s1", "s2"}
    result = run(snap, p, whatif.Scope(sites=("s1",)))
    [why] = one(result).cannot_restore
    assert why["kind"] == rp.CAPACITY and "numa" in why["reason"], why
    assert result.shortfall == {"pcpus": 4, "memory_mb": 8192, "vfs:physnet1": 2}
    assert not result.absorbable


def test_quota_bound() -> None:
    snap = world(3)
    p = placed_fw(snap)
    quota = {p.record.tenant: {"pinned_cores": 3}}
    [why] = one(
        run(snap, p, whatif.Scope(sites=(active_site(p),)), quota_free=quota)
    ).cannot_restore
    assert why["kind"] == rp.QUOTA and "pinned_cores needs 4, 3 free" in why["reason"]
    enough = {p.record.tenant: {"pinned_cores": 4}}
    assert one(run(snap, p, whatif.Scope(sites=(active_site(p),)), quota_free=enough)).replacements


def test_image_bound() -> None:
    snap = world(3)
    p = placed_fw(snap)
    images = {"s1": {"vfw"}, "s2": {"vfw"}, "s3": set[str]()}
    [why] = one(run(snap, p, whatif.Scope(sites=(active_site(p),)), images=images)).cannot_restore
    assert why["kind"] == rp.IMAGE and "image vfw absent" in why["reason"]


def test_single_member_restored_by_rebuild_or_lost() -> None:
    snap = world(2)
    p = placed_fw(snap, fw(model="single"))
    [m] = p.record.members
    out = one(run(snap, p, whatif.Scope(sites=(m.site,))))
    assert out.service == "restored" and out.rto_s == 103.0 and out.replacements
    snap1 = world(1)
    p1 = placed_fw(snap1, fw(model="single"))
    out1 = one(run(snap1, p1, whatif.Scope(sites=("s1",))))
    assert out1.service == "lost" and out1.state == "FAILED" and out1.rto_s is None


def test_host_scope_and_tenants_filter() -> None:
    snap = world(3)
    p = placed_fw(snap)
    act = next(m for m in p.record.members if m.role == "active")
    out = one(run(snap, p, whatif.Scope(hosts=(f"{act.site}/{act.host}",))))
    assert out.replacements and out.replacements[0]["host"] != act.host
    assert (
        whatif.run(
            snap,
            [p],
            whatif.Scope(sites=(act.site,)),
            SETTINGS,
            select=whatif.Selector(tenants=("someone-else",)),
        ).vnfs
        == []
    )
    assert run(snap, p, whatif.Scope(sites=("nowhere",))).vnfs == []


def test_zone_and_region_scopes_name_their_sites() -> None:
    snap = P.world(
        [SiteDef("a", "r1", zone="z1"), SiteDef("b", "r1", zone="z2"), SiteDef("c", "r2")]
    )
    assert whatif.Scope(zones=("r1/z2",)).lost(snap)[0] == {"b"}
    assert whatif.Scope(regions=("r1",)).lost(snap)[0] == {"a", "b"}
    assert np.all(snap.up)


@pytest.mark.parametrize(
    "bad",
    [{}, {"sites": []}, {"planets": ["x"]}, {"sites": "s1"}, {"hosts": [1]}],
)
def test_bad_scope_is_a_clear_error(bad: dict[str, Any]) -> None:
    with pytest.raises(errors.InvalidInput):
        whatif.Scope.parse(bad)


def test_a_selector_matches_tenants_ids_and_every_label() -> None:
    rec = model.VnfRecord("v1", "t1", {"labels": {"app": "fw", "tier": "edge"}})
    assert whatif.Selector().matches(rec)
    doc = {"tenants": ["t1"], "vnfs": ["v1"], "selector": {"labels": {"app": "fw"}}}
    assert whatif.Selector.of(doc).matches(rec)
    for other in (
        {"tenants": ["t2"]},
        {"vnfs": ["v2"]},
        {"selector": {"labels": {"app": "fw", "tier": "core"}}},
        {"selector": {"labels": {"zone": "a"}}},
    ):
        assert not whatif.Selector.of(other).matches(rec), other
    assert not whatif.Selector(labels=(("app", "fw"),)).matches(model.VnfRecord("v", "t", {}))


def catalogued(image: str) -> model.Descriptor:
    """The vFirewall running a catalogue image (not one the descriptor declares)."""
    raw = P.sample("vfirewall").model_dump(by_alias=True)
    raw["sw_images"], raw["vdus"][0]["sw_image"] = [], image
    return model.parse(raw)


def catalog(image: str, at: set[str], rate: float = 0.0) -> imagetable.Catalog:
    img = cat.Image(cat.ImageId(image), image, 2_000_000_000, "0" * 64, cat.SiteId("s0"))
    replicas = [
        cat.Replica(img.id, cat.SiteId(s), cat.State.ACTIVE, img.size, rate) for s in sorted(at)
    ]
    return imagetable.Catalog.build([cat.Entry(img)], replicas, 50e6)


def test_image_table_present_or_replication_with_its_time() -> None:
    snap = world(3)
    p = placed_fw(snap, catalogued("img-fw"))
    lost = active_site(p)
    scope = whatif.Scope(sites=(lost,))
    [target] = [r["site"] for r in one(run(snap, p, scope)).replacements]
    there = one(run(snap, p, scope, catalog=catalog("img-fw", {target})))
    assert there.images == [
        {
            "member": "fw-0",
            "site": target,
            "image": "img-fw",
            "status": imagetable.PRESENT,
            "estimate_s": 0.0,
        }
    ]
    away = one(run(snap, p, scope, catalog=catalog("img-fw", set())))
    [line] = away.images
    assert line["status"] == imagetable.REPLICATE and line["estimate_s"] == 40.0, line
    assert away.rto_s == there.rto_s, "the standby serves meanwhile: the RTO does not wait"
    measured = one(run(snap, p, scope, catalog=catalog("img-fw", {"elsewhere"}, 200e6)))
    assert measured.images[0]["estimate_s"] == 10.0, "the rate its replicas measured"
    unknown = one(run(snap, p, scope, catalog=catalog("other", set())))
    assert [i["status"] for i in unknown.images] == [imagetable.UNKNOWN]
    own = one(run(snap, placed_fw(world(3)), scope, catalog=catalog("vfw", set())))
    assert [i["status"] for i in own.images] == [imagetable.DECLARED]


def test_a_restored_vnfs_rto_waits_for_its_image() -> None:
    snap = world(3)
    p = placed_fw(snap, catalogued("img-fw"))
    single = whatif.Placed(  # only the active member: its loss stops the service
        dataclasses.replace(p.record, members=p.record.members[:1]), p.desc
    )
    scope = whatif.Scope(sites=(single.record.members[0].site,))
    out = one(
        whatif.run(snap, [single], scope, SETTINGS, rto=RTO, catalog=catalog("img-fw", set()))
    )
    assert out.service == "restored" and out.images[0]["estimate_s"] == 40.0, out
    assert out.rto_s == RTO.detect_s + RTO.restore_s + 40.0, out
