"""The planner against a brute-force solver on small, tight problems.

The brute force tries every (site, host, NUMA cell) for every member, with no pruning, no
symmetry and no budget, and checks the descriptor's rules as ``test_properties`` does. The
planner must find a plan exactly when one exists. The worlds are drawn tight (few hosts,
few cores, VFs on some cells only) so members contend for cells; the test counts how many
drawn problems were feasible and how many needed the search to backtrack, and fails if
either share is too small to prove anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.models import vnf
from broker.placement import claims as cl
from broker.placement.plan import Planner
from broker.placement.snapshot import Snapshot
from tests.support import placement as P
from tests.support.placement import CellShape, SiteDef

EXAMPLES = 300


CELLS = [
    # most cells hold one member of 4 pinned cores and 2 GiB; VFs on some of them only
    # (first: a search that takes the first cell that fits takes the VFs a later member needs)
    CellShape(cpus=6, pcpus=4, memory_mb=4096, pages_2m=1024, pages_1g=0, vfs={"sriov1": 2}),
    CellShape(cpus=6, pcpus=4, memory_mb=4096, pages_2m=1024, pages_1g=0, vfs={"sriov1": 0}),
    CellShape(cpus=8, pcpus=8, memory_mb=8192, pages_2m=2048, pages_1g=0, vfs={"sriov1": 4}),
    CellShape(cpus=8, pcpus=8, memory_mb=8192, pages_2m=2048, pages_1g=0, vfs={"sriov1": 0}),
    CellShape(cpus=2, pcpus=0, memory_mb=2048, pages_2m=0, pages_1g=0, vfs={"sriov1": 2}),
]


def cells() -> st.SearchStrategy[CellShape]:
    return st.sampled_from(CELLS)


@st.composite
def worlds(draw: st.DrawFn) -> list[SiteDef]:
    sites = []
    for i in range(draw(st.integers(1, 2))):
        hosts = tuple(
            tuple(draw(cells()) for _ in range(draw(st.sampled_from([1, 2, 2]))))
            for _ in range(draw(st.integers(1, 3)))
        )
        sites.append(SiteDef(f"s{i}", f"r{draw(st.integers(0, 1))}", per_host=hosts))
    return sites


@st.composite
def descriptors(draw: st.DrawFn) -> vnf.Descriptor:
    data: dict[str, Any] = vnf.to_json(P.sample("vepc-upf"))
    base = data["vdus"][0]
    data["virtual_links"] = [
        {"name": "oam"},
        *({"name": f"s{k}", "network_type": "vlan", "physnet": "sriov1"} for k in range(2)),
    ]
    vdus = []
    # half the time the contended shape: VDUs without VFs placed before VDUs with them
    contended = draw(st.booleans())
    for i in range(draw(st.integers(1, 3))):
        vfs = min(2, 2 * i) if contended else draw(st.sampled_from([0, 0, 1, 2]))
        vdus.append(
            {
                **base,
                "name": f"v{i}",
                "virtual_compute": {
                    **base["virtual_compute"],
                    "num_virtual_cpu": draw(st.sampled_from([2, 4, 4])),
                    "virtual_mem_size_mb": draw(st.sampled_from([1024, 2048, 2048])),
                    "cpu_pinning": draw(st.sampled_from(["dedicated", "dedicated", "shared"])),
                    "hugepage_size": draw(st.sampled_from(["2MB", "2MB", "none"])),
                    "numa_affinity": draw(st.sampled_from(["required", "required", "preferred"])),
                },
                "connection_points": [
                    {"name": "oam", "virtual_link": "oam"},
                    *(
                        {"name": f"s{k}", "virtual_link": f"s{k}", "vnic_type": "direct"}
                        for k in range(vfs)
                    ),
                ],
                "redundancy": draw(
                    st.sampled_from([{"model": "single"}, {"model": "active-standby"}])
                ),
                "anti_affinity": draw(st.sampled_from([None, "host", "site"])),
            }
        )
    data["vdus"] = vdus
    data["anti_affinity"] = []
    if len(vdus) > 1 and draw(st.booleans()):
        scope = draw(st.sampled_from(["host", "site", "region"]))
        data["anti_affinity"] = [{"targets": [v["name"] for v in vdus], "scope": scope}]
    data["preferences"] = {"strategy": draw(st.sampled_from(["pack", "spread"]))}
    return vnf.parse(data)


@st.composite
def tight(draw: st.DrawFn) -> tuple[list[SiteDef], vnf.Descriptor]:
    """One site with as many cells with VFs as members that need them, as many without as
    members that do not (sometimes one more of either), in any order, 1 or 2 per host."""
    desc = draw(descriptors())
    members = vnf.members(desc)
    with_vfs = sum(1 for m in members if m.need.vfs)
    pool = [CELLS[0]] * (with_vfs + draw(st.integers(0, 1)))
    pool += [CELLS[1]] * (len(members) - with_vfs + draw(st.integers(0, 1)))
    pool = draw(st.permutations(pool))
    hosts: list[tuple[CellShape, ...]] = []
    while pool:
        n = draw(st.integers(1, 2))
        hosts.append(tuple(pool[:n]))
        pool = pool[n:]
    return [SiteDef("s0", "r0", per_host=tuple(hosts))], desc


def problems() -> st.SearchStrategy[tuple[list[SiteDef], vnf.Descriptor]]:
    return st.one_of(st.tuples(worlds(), descriptors()), tight())


def brute_force(snap: Snapshot, desc: vnf.Descriptor, first_fit: bool = False) -> bool:
    """Is there any assignment of every member to a (site, host, cell) that fits?

    ``first_fit``: try only the first allowed (host, cell) of each site, as a search that
    backtracks over sites only would."""
    members = vnf.members(desc)
    rules = [({v.name}, v.scope) for v in desc.vdus]
    rules += [(set(r.targets), r.scope) for r in desc.anti_affinity]
    placed: list[tuple[vnf.Member, str, cl.Claim]] = []

    def options(member: vnf.Member) -> Iterator[tuple[str, cl.Claim]]:
        for site in snap.order:
            if site.health != "UP":
                continue
            for host in site.hosts:
                for cell in host.cells:
                    claim = cl.on_cell(host, cell, member.need, member.name)
                    if claim is not None:
                        yield site.id, claim

    def allowed(member: vnf.Member, site_id: str, claim: cl.Claim) -> bool:
        mine = snap.sites[site_id].domain
        for other, other_site, other_claim in placed:
            theirs = snap.sites[other_site].domain
            for targets, scope in rules:
                if member.vdu in targets and other.vdu in targets:
                    if mine(scope, claim.host) == theirs(scope, other_claim.host):
                        return False
        return True

    def place(i: int) -> bool:
        if i == len(members):
            return all(
                len({s for m, s, _ in placed if m.vdu == v.name}) >= v.redundancy.min_sites
                for v in desc.vdus
            )
        member = members[i]
        tried: set[str] = set()
        for site_id, claim in list(options(member)):
            if site_id in tried or not allowed(member, site_id, claim):
                continue
            if first_fit:
                tried.add(site_id)
            snap.sites[site_id].hold(claim)
            placed.append((member, site_id, claim))
            try:
                if place(i + 1):
                    return True
            finally:
                placed.pop()
                snap.sites[site_id].hold(claim, -1)
        return False

    return place(0)


def test_planner_finds_a_plan_exactly_when_one_exists() -> None:
    seen: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(problems())
    def agree(problem: tuple[list[SiteDef], vnf.Descriptor]) -> None:
        sites, desc = problem
        snap = P.world(sites)
        result = Planner().plan(snap, desc, "p")
        assert "search budget" not in result.reason
        expected = brute_force(P.world(sites), desc)
        assert result.feasible == expected, result.reason
        seen["feasible" if expected else "infeasible"] += 1
        if result.feasible and len(sites) == 1 and result.attempts > len(result.assignments):
            # one site: every attempt beyond one per member was a second (host, cell), so
            # a search that backtracks over sites only would have refused this VNF
            seen["only with backtracking in a site"] += 1

    agree()
    total = seen["feasible"] + seen["infeasible"]
    # a property that only ever meets infeasible problems (or only trivial ones) proves
    # nothing: demand a healthy share of each kind
    assert seen["feasible"] >= total // 4, seen
    assert seen["infeasible"] >= total // 10, seen
    assert seen["only with backtracking in a site"] >= total // 40, seen
