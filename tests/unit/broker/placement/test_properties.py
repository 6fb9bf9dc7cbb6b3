"""Property tests: every plan satisfies every constraint and never exceeds a NUMA cell."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.models import vnf
from broker.placement import claims as cl
from broker.placement.plan import Planner
from broker.placement.snapshot import Snapshot
from tests.support import placement as P
from tests.support.placement import CellShape, SiteDef

SCOPES = ["host", "site", "zone", "region", "failure_domain:power"]


@st.composite
def worlds(draw: st.DrawFn) -> list[SiteDef]:
    n = draw(st.integers(1, 7))
    sites = []
    for i in range(n):
        shapes = tuple(
            CellShape(
                cpus=draw(st.integers(4, 24)),
                pcpus=draw(st.integers(0, 4)),
                memory_mb=draw(st.sampled_from([2048, 8192, 16384])),
                pages_2m=draw(st.integers(0, 4096)),
                pages_1g=draw(st.integers(0, 8)),
                vfs={"physnet1": draw(st.integers(0, 4))},
            )
            for _ in range(draw(st.integers(1, 2)))
        )
        sites.append(
            SiteDef(
                f"s{i}",
                f"r{draw(st.integers(0, 2))}",
                hosts=draw(st.integers(1, 3)),
                shapes=shapes,
                zone=f"z{draw(st.integers(0, 1))}",
                health=draw(st.sampled_from(["UP"] * 4 + ["DOWN"])),
                failure_domains={"power": f"p{draw(st.integers(0, 2))}"},
                labels={"tier": draw(st.sampled_from(["edge", "core"]))},
            )
        )
    return sites


@st.composite
def descriptors(draw: st.DrawFn) -> vnf.Descriptor:
    data: dict[str, Any] = vnf.to_json(P.sample("vfirewall"))
    base = data["vdus"][0]
    vdus = []
    for i in range(draw(st.integers(1, 3))):
        vdus.append(
            {
                **base,
                "name": f"v{i}",
                "virtual_compute": {
                    "num_virtual_cpu": draw(st.integers(1, 4)),
                    "virtual_mem_size_mb": draw(st.sampled_from([1024, 2048])),
                    "cpu_pinning": draw(st.sampled_from(["shared", "dedicated"])),
                    "hugepage_size": draw(st.sampled_from(["none", "2MB", "1GB"])),
                    "numa_affinity": draw(st.sampled_from(["required", "preferred"])),
                },
                "connection_points": draw(
                    st.sampled_from([base["connection_points"][:1], base["connection_points"]])
                ),
                "redundancy": draw(
                    st.sampled_from(
                        [
                            {"model": "single"},
                            {"model": "active-standby"},
                            {"model": "n+k", "n": 2, "k": 1},
                            {"model": "active-active", "n": 2, "min_sites": 2},
                        ]
                    )
                ),
                "anti_affinity": draw(st.sampled_from([None, *SCOPES])),
            }
        )
    data["vdus"] = vdus
    if len(vdus) > 1 and draw(st.booleans()):
        data["anti_affinity"] = [
            {"targets": [v["name"] for v in vdus], "scope": draw(st.sampled_from(SCOPES))}
        ]
    if draw(st.booleans()):
        data["selectors"] = {"tier": "edge"}
    data["preferences"] = {"strategy": draw(st.sampled_from(["pack", "spread"]))}
    return vnf.parse(data)


def check_plan(snap: Snapshot, desc: vnf.Descriptor, sites: list[SiteDef]) -> None:
    result = Planner().plan(snap, desc, "p")
    if not result.feasible:
        assert result.reason
        return
    members = vnf.members(desc)
    assert sorted(a.member.name for a in result.assignments) == sorted(m.name for m in members)
    defs = {s.id: s for s in sites}
    for a in result.assignments:
        site = snap.sites[a.site]
        assert site.health == "UP"
        assert all(defs[a.site].labels.get(k) == v for k, v in desc.selectors.items())
    rules = [({v.name}, v.scope) for v in desc.vdus]
    rules += [(set(r.targets), r.scope) for r in desc.anti_affinity]
    for i, a in enumerate(result.assignments):
        for b in result.assignments[i + 1 :]:
            for targets, scope in rules:
                if a.member.vdu in targets and b.member.vdu in targets:
                    da = snap.sites[a.site].domain(scope, a.claim.host)
                    db = snap.sites[b.site].domain(scope, b.claim.host)
                    assert da != db, (scope, a, b)
    for vdu in desc.vdus:
        used = {a.site for a in result.assignments if a.member.vdu == vdu.name}
        assert len(used) >= vdu.redundancy.min_sites
    # capacity: apply every claim to a fresh copy of the snapshot; no counter goes negative
    fresh = P.world(sites)
    for a in result.assignments:
        site = fresh.sites[a.site]
        host = site.host_by_name[a.claim.host]
        cl.take(host, a.claim)
        assert a.claim.memory_mb or a.claim.pages
        if a.member.need.vfs_local:
            assert all(c == a.claim.cell for _, c, _ in a.claim.vfs)
    for site in fresh.order:
        for host in site.hosts:
            for c in host.cells:
                assert c.pcpus_free >= 0 and c.vcpus_free >= 0 and c.mem_free >= 0, site.id
                assert all(v >= 0 for v in c.pages.values())
                assert all(v >= 0 for v in c.vfs.values())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), descriptors())
def test_every_plan_satisfies_every_constraint(sites: list[SiteDef], desc: vnf.Descriptor) -> None:
    snap = P.world(sites)
    check_plan(snap, desc, sites)


@settings(max_examples=25, deadline=None)
@given(worlds(), st.lists(descriptors(), min_size=2, max_size=5))
def test_successive_commits_never_exceed_capacity(
    sites: list[SiteDef], descs: list[vnf.Descriptor]
) -> None:
    snap = P.world(sites)
    placed = []
    for n, desc in enumerate(descs):
        result = Planner().plan(snap, desc, f"v{n}")
        if result.feasible:
            for a in result.assignments:
                snap.add_claims(snap.sites[a.site], [a.claim], snap.revision + 1)
            placed += result.assignments
    fresh = P.world(sites)
    for a in placed:
        cl.take(fresh.sites[a.site].host_by_name[a.claim.host], a.claim)
    for site in fresh.order:
        for host in site.hosts:
            for c in host.cells:
                assert c.pcpus_free >= 0 and c.vcpus_free >= 0 and c.mem_free >= 0
                assert all(v >= 0 for v in [*c.pages.values(), *c.vfs.values()])
