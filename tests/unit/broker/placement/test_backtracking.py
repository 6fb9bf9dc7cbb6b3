"""Backtracking inside a site: over hosts and NUMA cells, not only over sites.

Each case is a site where the first host and the first cell that fit an early member take
what a later member needs; first-fit refuses the VNF although it fits. The explanation
cases check that a refusal names what really blocked: the site's capacity, the VNF's own
members (shared capacity) or host anti-affinity.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from broker.models import vnf
from broker.placement.plan import Planner
from tests.support import placement as P
from tests.support.placement import CellShape, SiteDef

# 4 pCPUs and 2 GiB of 2 MiB huge pages; with or without 2 VFs on sriov1
BARE = CellShape(cpus=4, pcpus=4, memory_mb=4096, pages_2m=1024, pages_1g=0, vfs={"sriov1": 0})
VFS = replace(BARE, vfs={"sriov1": 2})


def descriptor(
    vdus: list[tuple[str, int, int]], strategy: str = "pack", host_rule: bool = False
) -> vnf.Descriptor:
    """VDUs of (name, members, VFs on sriov1); each member 4 pinned cores + 2 GiB in 2 MiB
    pages, VFs on its NUMA node. ``host_rule``: no two members of the VNF share a host."""
    data: dict[str, Any] = vnf.to_json(P.sample("vepc-upf"))
    base = data["vdus"][0]
    data["virtual_links"] = [
        {"name": "oam"},
        *({"name": f"s{k}", "network_type": "vlan", "physnet": "sriov1"} for k in range(2)),
    ]
    models: dict[int, dict[str, Any]] = {1: {"model": "single"}, 2: {"model": "active-standby"}}
    models.update({n: {"model": "n+k", "n": n - 1, "k": 1} for n in range(3, 10)})
    data["vdus"] = [
        {
            **base,
            "name": name,
            "virtual_compute": {
                **base["virtual_compute"],
                "num_virtual_cpu": 4,
                "virtual_mem_size_mb": 2048,
            },
            "connection_points": [
                {"name": "oam", "virtual_link": "oam"},
                *(
                    {"name": f"s{k}", "virtual_link": f"s{k}", "vnic_type": "direct"}
                    for k in range(vfs)
                ),
            ],
            "redundancy": models[members],
            "anti_affinity": "host",
        }
        for name, members, vfs in vdus
    ]
    data["anti_affinity"] = (
        [{"targets": [v[0] for v in vdus], "scope": "host"}] if host_rule and len(vdus) > 1 else []
    )
    data["preferences"] = {"strategy": strategy}
    return vnf.parse(data)


def site(*hosts: tuple[CellShape, ...]) -> list[SiteDef]:
    return [SiteDef("a", "r1", per_host=hosts)]


TWO = descriptor([("m", 1, 0), ("v", 1, 2)])
"""m-0 needs no VF, v-0 needs 2 VFs: m-0 must stay out of v-0's way."""
H = "a-cmp-00"

FITS = [
    # name, sites, descriptor, member → (host, NUMA cell)
    ("cells", site((VFS, BARE)), TWO, {"m-0": (H + "0", 1), "v-0": (H + "0", 0)}),
    (
        "cells, spread, VFs on cell 1",
        site((BARE, VFS)),
        descriptor([("m", 1, 0), ("v", 1, 2)], strategy="spread"),
        {"m-0": (H + "0", 0), "v-0": (H + "0", 1)},
    ),
    ("hosts", site((VFS,), (BARE,)), TWO, {"m-0": (H + "1", 0), "v-0": (H + "0", 0)}),
    (
        "hosts, spread",
        site((VFS,), (BARE,)),
        descriptor([("m", 1, 0), ("v", 1, 2)], strategy="spread"),
        {"m-0": (H + "1", 0), "v-0": (H + "0", 0)},
    ),
    (
        "host anti-affinity",
        site((VFS,), (VFS,), (BARE,)),
        descriptor([("m", 1, 0), ("v", 2, 2)], host_rule=True),
        {"m-0": (H + "2", 0), "v-0": (H + "0", 0), "v-1": (H + "1", 0)},
    ),
    (
        # twin hosts 0 and 1 tried from 1 (spread): 0 must stay open to the second VF member
        "host anti-affinity, spread",
        site((VFS,), (VFS,), (BARE,)),
        descriptor([("m", 1, 0), ("v", 2, 2)], strategy="spread", host_rule=True),
        {"m-0": (H + "2", 0), "v-0": (H + "0", 0), "v-1": (H + "1", 0)},
    ),
    (
        "cells of two hosts",
        site((VFS, BARE), (VFS, BARE)),
        descriptor([("m", 2, 0), ("v", 2, 2)]),
        {
            "m-0": (H + "0", 1),
            "m-1": (H + "1", 1),
            "v-0": (H + "0", 0),
            "v-1": (H + "1", 0),
        },
    ),
]


@pytest.mark.parametrize(("name", "sites", "desc", "where"), FITS, ids=[f[0] for f in FITS])
def test_backtracks_over_hosts_and_cells(
    name: str, sites: list[SiteDef], desc: vnf.Descriptor, where: dict[str, tuple[str, int]]
) -> None:
    snap = P.world(sites)
    result = Planner().plan(snap, desc, "x")
    assert result.feasible, result.reason
    got = {a.member.name: (a.claim.host, a.claim.cell) for a in result.assignments}
    assert got == where


REFUSALS = [
    # name, sites, descriptor, the member refused, what the reason must say
    (
        "shared capacity: both need the one cell with VFs",
        site((VFS, BARE)),
        descriptor([("m", 1, 2), ("v", 1, 2)]),
        "v-0",
        ["fits alone but not beside the members placed before it", "beside m-0 on a-cmp-000"],
    ),
    (
        "capacity: no cell has the VFs",
        site((BARE, BARE)),
        descriptor([("m", 1, 0), ("v", 1, 2)]),
        "",
        [],  # dropped by the site checkers before the search
    ),
    (
        "host anti-affinity: one host",
        site((VFS, VFS)),
        descriptor([("v", 2, 2)]),
        "v-1",
        ["the hosts it fits on hold members it must not share a host with", "v-0 on a-cmp-000"],
    ),
]


@pytest.mark.parametrize(
    ("name", "sites", "desc", "member", "says"), REFUSALS, ids=[r[0] for r in REFUSALS]
)
def test_refusal_names_what_blocked(
    name: str, sites: list[SiteDef], desc: vnf.Descriptor, member: str, says: list[str]
) -> None:
    snap = P.world(sites)
    result = Planner().plan(snap, desc, "x")
    assert not result.feasible
    for text in says:
        assert text in result.reason, result.reason
    if says:
        assert "no host has" not in result.reason  # a host fits: it was taken, not missing
        assert f"member {member} " in result.reason
        # the explanation counts the same refusal against that member
        refused = result.explain(snap)["search"]["refused"]
        assert refused[member] == {says[0]: 1}, refused


def test_capacity_refusal_says_no_host_has_it() -> None:
    # the site summary passes (a cell with 4 free cores, a cell with VFs) but no one cell
    # holds both: the site's capacity blocks, whatever the other members do
    split = (replace(VFS, pcpus=0, cpus=4), BARE)
    snap = P.world(site(split))
    result = Planner().plan(snap, descriptor([("v", 1, 2)]), "x")
    assert not result.feasible
    assert "no host has the capacity" in result.reason
    assert "cell 0: 0 of 4 pinned cores free" in result.host_reasons["v"]["a"]


def test_identical_hosts_and_cells_are_tried_once() -> None:
    # 50 identical hosts of 2 identical cells, and one member no host can hold (its VFs sit
    # on a host without free cores): every branch fails, and symmetry keeps the search to a
    # few attempts where trying every (host, cell) of the first two members would take
    # 100 x 100 attempts and exhaust the budget
    hosts = [(BARE, BARE)] * 50 + [(replace(VFS, pcpus=0, cpus=4),)]
    snap = P.world(site(*hosts))
    desc = descriptor([("m", 2, 0), ("v", 1, 2)])
    result = Planner().plan(snap, desc, "x")
    assert not result.feasible
    assert "search budget" not in result.reason
    assert result.attempts < 20, result.attempts


def test_members_of_a_vdu_are_not_tried_in_every_order() -> None:
    # nine members that never share a host, eight hosts that each hold one, all different
    # (no two hosts alike, so host symmetry cannot help): proving there is no plan takes
    # the subsets of the hosts in one order, not the 8! orders, which exceed the budget
    hosts = [(replace(VFS, memory_mb=4096 + k),) for k in range(8)]
    snap = P.world(site(*hosts))
    result = Planner().plan(snap, descriptor([("v", 9, 0)]), "x")
    assert not result.feasible
    assert "search budget" not in result.reason, result.reason
    assert result.attempts < 1000, result.attempts
    assert "member v-8 " in result.reason
