"""The plan: whole-group anti-affinity with backtracking, admission, and explanations."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from broker import errors
from broker.models import vnf
from broker.placement import admission, feasible
from broker.placement.plan import Planner
from broker.store import keys
from tests.support import placement as P
from tests.support.placement import CellShape, SiteDef

ROOMY = CellShape()


def three_vdus() -> vnf.Descriptor:
    """big, medium and small members that must sit in three different regions."""
    data = vnf.to_json(P.sample("vims"))
    base = data["vdus"][0]
    data["vdus"] = [
        {
            **base,
            "name": name,
            "redundancy": {"model": "single"},
            "anti_affinity": None,
            "virtual_compute": {**base["virtual_compute"], "num_virtual_cpu": cpus},
        }
        for name, cpus in [("small", 2), ("medium", 6), ("big", 10)]
    ]
    data["anti_affinity"] = [{"targets": ["small", "medium", "big"], "scope": "region"}]
    data["latency"] = {}
    data["preferences"] = {"strategy": "spread", "weights": {"utilization": 0.0, "cost": 1.0}}
    return vnf.parse(data)


def test_greedy_fails_backtracking_does_not() -> None:
    # region-c is cheapest and nearly full (fits small or medium, never big); region-a
    # cannot take big either; only region-b can. Greedy in descriptor order puts small
    # on c, medium on b, and leaves big nowhere.
    def site(name: str, region: str, vcpus: int, cost: str) -> SiteDef:
        cpus = vcpus // 4 + 1
        return SiteDef(
            name,
            region,
            hosts=1,
            labels={"cost": cost},
            shapes=(replace(ROOMY, cpus=cpus, pcpus=1),),
        )

    sites = [
        site("a", "region-a", 8, "3"),
        site("b", "region-b", 40, "2"),
        site("c", "region-c", 8, "1"),
    ]
    snap = P.world(sites)
    desc = three_vdus()
    result = Planner().plan(snap, desc, "v")
    assert result.feasible, result.reason
    where = {a.member.vdu: a.site for a in result.assignments}
    assert where["big"] == "b"
    assert len(set(where.values())) == 3
    # the greedy answer (member by member in descriptor order, best site first) fails
    greedy: dict[str, str] = {}
    for vdu in desc.vdus:
        one = desc.model_copy(update={"vdus": [vdu], "anti_affinity": []})
        taken = set(greedy.values())
        rest = [s for s in sites if s.id not in taken]
        plan = Planner().plan(P.world(rest), one, "g")
        if not plan.feasible:
            break
        greedy[vdu.name] = plan.assignments[0].site
    assert "big" not in greedy


def test_plan_leaves_the_snapshot_as_it_found_it() -> None:
    snap = P.world(P.regions(2))
    before = [
        (c.pcpus_free, c.vcpus_free, dict(c.pages), dict(c.vfs))
        for s in snap.order
        for h in s.hosts
        for c in h.cells
    ]
    for name in ["vfirewall", "vepc-upf"]:
        assert Planner().plan(snap, P.sample(name), "x").feasible
    after = [
        (c.pcpus_free, c.vcpus_free, dict(c.pages), dict(c.vfs))
        for s in snap.order
        for h in s.hosts
        for c in h.cells
    ]
    assert before == after


def test_host_anti_affinity_spreads_over_hosts_and_sites() -> None:
    snap = P.world([SiteDef("only", "r1", hosts=3)])
    result = Planner().plan(snap, P.sample("vepc-upf"), "x")  # 5 members, 3 hosts
    assert not result.feasible
    snap = P.world([SiteDef("one", "r1", hosts=3), SiteDef("two", "r1", hosts=3)])
    result = Planner().plan(snap, P.sample("vepc-upf"), "x")
    assert result.feasible
    hosts = [(a.site, a.claim.host) for a in result.assignments]
    assert len(set(hosts)) == 5


def test_infeasible_plan_carries_every_reason() -> None:
    sites = [
        SiteDef("down", "r1", health="DOWN"),
        SiteDef("tiny", "r2", shapes=(replace(ROOMY, pcpus_used=27),)),
        SiteDef("ok", "r3"),
    ]
    snap = P.world(sites)
    result = Planner().plan(snap, P.sample("vfirewall"), "x")  # needs two sites
    assert not result.feasible
    assert "fw-" in result.reason and "1 of 3 sites passed" in result.reason
    explained = result.explain(snap)
    reasons = {f["site"]: f["reason"] for f in explained["vdus"]["fw"]["filtered"]}
    assert reasons["down"].startswith("site-up")
    assert reasons["tiny"].startswith("numa-cores")
    assert explained["vdus"]["fw"]["dropped_by"] == {"site-up": 1, "numa-cores": 1}


def test_a_drained_site_takes_no_new_member_and_the_refusal_names_the_drain() -> None:
    """``drains/<site>`` (issue 10): new placements avoid the site; when nothing else fits,
    the refusal names the drain; once undrained the site is used again."""
    sites = [SiteDef("a", "r1"), SiteDef("b", "r2"), SiteDef("c", "r3")]
    snap = P.world(sites)
    snap.apply(keys.drain("b"), b'{"at_ms": 1}', 100)
    result = Planner().plan(snap, P.sample("vfirewall"), "x")  # an active-standby pair
    assert result.feasible, result.reason
    assert {a.site for a in result.assignments} == {"a", "c"}

    snap.apply(keys.drain("c"), b'{"at_ms": 2}', 101)
    result = Planner().plan(snap, P.sample("vfirewall"), "x")
    assert not result.feasible and "dropped: 2 by drained" in result.reason
    reasons = {f["site"]: f["reason"] for f in result.explain(snap)["vdus"]["fw"]["filtered"]}
    assert reasons["b"] == (
        "drained: site is being drained for maintenance (drains/b); undrain it first"
    )
    assert "drains/c" in reasons["c"]

    snap.apply(keys.drain("b"), None, 102)  # undrained
    result = Planner().plan(snap, P.sample("vfirewall"), "x")
    assert result.feasible and {a.site for a in result.assignments} == {"a", "b"}


def test_quota_shortfall_is_data() -> None:
    """The quota is a checker, last in the chain (nomad's quota iterator)."""
    sites = P.regions(1)
    snap = P.world(sites, P.paris_latency(sites))
    planner = Planner().with_checkers(feasible.QuotaChecker("cores: 2 left, 12 asked"))
    assert isinstance(planner.checkers[-1], feasible.QuotaChecker)
    result = planner.plan(snap, P.sample("vims"), "x")
    assert not result.feasible and result.reason == "quota: cores: 2 left, 12 asked"
    assert result.quota == "cores: 2 left, 12 asked"
    # every site that passed the other checkers was dropped by the quota
    assert all(f.counts() == {"quota": len(snap.order)} for f in result.filters.values())
    assert Planner().with_checkers(feasible.QuotaChecker(None)).plan(
        snap, P.sample("vims"), "x"
    ).feasible


def test_latency_between_members() -> None:
    sites = P.regions(1)
    lat = [("metro-paris", s.id, 10.0) for s in sites]
    lat += [("s1-0", "s2-0", 50.0), ("s2-0", "s3-0", 50.0), ("s1-0", "s3-0", 90.0)]
    result = Planner().plan(P.world(sites, lat), P.sample("vims"), "x")
    assert not result.feasible  # s1-0 and s3-0 are 90 ms apart, bound 80
    lat[-1] = ("s1-0", "s3-0", 70.0)
    assert Planner().plan(P.world(sites, lat), P.sample("vims"), "x").feasible


ADMISSION = [
    ("vims", lambda d: d, P.regions(1)[:2], "vdus[0].anti_affinity", "federation has 2"),
    (
        "vfirewall",
        lambda d: {
            **d,
            "virtual_links": [
                *d["virtual_links"][:1],
                {**d["virtual_links"][1], "physnet": "physnet9"},
                d["virtual_links"][2],
            ],
        },
        P.regions(1),
        "virtual_links[1].physnet",
        "physnet9",
    ),
    (
        "vims",
        lambda d: {**d, "latency": {"to_locations": [{"location": "mars", "max_ms": 5}]}},
        P.regions(1),
        "latency.to_locations[0].location",
        "mars",
    ),
    (
        "vims",
        lambda d: {**d, "vdus": [{**d["vdus"][0], "sw_image": "ghost"}]},
        P.regions(1),
        "vdus[0].sw_image",
        "ghost",
    ),
]


@pytest.mark.parametrize(
    ("sample", "change", "sites", "field", "says"), ADMISSION, ids=[a[3] for a in ADMISSION]
)
def test_admission_refuses_the_impossible(
    sample: str, change: Any, sites: list[SiteDef], field: str, says: str
) -> None:
    desc = vnf.parse(change(vnf.to_json(P.sample(sample))))
    snap = P.world(sites, P.paris_latency(sites))
    with pytest.raises(errors.InvalidInput) as caught:
        admission.check(desc, snap)
    assert caught.value.field == field and says in caught.value.problem


def test_admission_accepts_samples() -> None:
    sites = P.regions(2)
    snap = P.world(sites, P.paris_latency(sites))
    for name in ["vfirewall", "vepc-upf", "vims"]:
        admission.check(P.sample(name), snap)
