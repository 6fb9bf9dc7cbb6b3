"""Feasibility and scoring, table-driven: which sites pass, which fail and why."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from broker.models import vnf
from broker.placement import feasible, score
from broker.placement.plan import Planner
from tests.support import placement as P
from tests.support.placement import CellShape, SiteDef

PINNED = vnf.Need(
    vcpus=8, dedicated=True, memory_mb=4096, page_size_kb=2048, vfs=(("physnet1", 2),)
)


def ask(
    need: vnf.Need = PINNED,
    selectors: dict[str, str] | None = None,
    bounds: tuple[vnf.LocationBound, ...] = (),
) -> feasible.Ask:
    desc = P.sample("vepc-upf")
    return feasible.Ask(desc.vdus[0], need, tuple(sorted((selectors or {}).items())), bounds)


ROOMY = CellShape()
CASES = [
    # (id, site, ask, passes, reason fragment)
    ("up", SiteDef("a", "r1"), ask(), True, ""),
    ("down", SiteDef("a", "r1", health="DOWN"), ask(), False, "site-up: site is DOWN"),
    ("unknown", SiteDef("a", "r1", health="UNKNOWN"), ask(), False, "UNKNOWN, not UP"),
    (
        "selector-ok",
        SiteDef("a", "r1", labels={"tier": "core"}),
        ask(selectors={"tier": "core"}),
        True,
        "",
    ),
    (
        "selector-miss",
        SiteDef("a", "r1", labels={"tier": "edge"}),
        ask(selectors={"tier": "core"}),
        False,
        "tier=core (site: edge)",
    ),
    (
        "pinned-short",
        SiteDef("a", "r1", shapes=(replace(ROOMY, pcpus_used=24),) * 2),
        ask(),
        False,
        "no NUMA node has 8 free pinned cores (best node: 4; whole site: 32)",
    ),
    (
        "shared-ok-pinned-irrelevant",
        SiteDef("a", "r1", shapes=(replace(ROOMY, pcpus_used=28),)),
        ask(replace(PINNED, dedicated=False, vfs=(), page_size_kb=0)),
        True,
        "",
    ),
    (
        "hugepages-short",
        SiteDef("a", "r1", shapes=(replace(ROOMY, pages_2m=1000),)),
        ask(),
        False,
        "4096 MiB free in 2 MiB huge pages (best node: 2000 MiB)",
    ),
    ("1g-pages", SiteDef("a", "r1"), ask(replace(PINNED, page_size_kb=1048576)), True, ""),
    (
        "no-physnet",
        SiteDef("a", "r1", shapes=(replace(ROOMY, vfs={"physnet2": 8}),)),
        ask(),
        False,
        "sriov-vfs",
    ),
    (
        "vfs-short",
        SiteDef("a", "r1", shapes=(replace(ROOMY, vfs={"physnet1": 1}),) * 2),
        ask(),
        False,
        "no NUMA node has 2 free VFs on physnet1 (best: 1)",
    ),
    (
        "vfs-remote-allowed",
        SiteDef("a", "r1", shapes=(replace(ROOMY, vfs={"physnet1": 1}),) * 2),
        ask(replace(PINNED, vfs_local=False)),
        True,
        "",
    ),
]


@pytest.mark.parametrize(
    ("site", "the_ask", "passes", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_site_checkers(site: SiteDef, the_ask: feasible.Ask, passes: bool, reason: str) -> None:
    snap = P.world([site])
    filt = feasible.filter_sites(snap, the_ask, feasible.default_checkers())
    assert bool(filt.mask[0]) is passes
    why = filt.reason(snap, snap.order[0])
    if passes:
        assert why is None
    else:
        assert why is not None and reason in why, why


@pytest.mark.parametrize(("ms", "passes"), [(5.0, True), (20.0, True), (20.5, False)])
def test_latency_checker(ms: float, passes: bool) -> None:
    snap = P.world([SiteDef("a", "r1")], [("paris", "a", ms)])
    bound = vnf.LocationBound(location="paris", max_ms=20)
    filt = feasible.filter_sites(snap, ask(bounds=(bound,)), feasible.default_checkers())
    assert bool(filt.mask[0]) is passes
    if not passes:
        assert "latency to paris is 20.5 ms, bound 20 ms" in str(filt.reason(snap, snap.order[0]))


def test_unmeasured_latency_is_filtered() -> None:
    snap = P.world([SiteDef("a", "r1")])
    bound = vnf.LocationBound(location="paris", max_ms=20)
    filt = feasible.filter_sites(snap, ask(bounds=(bound,)), feasible.default_checkers())
    assert "no latency measured" in str(filt.reason(snap, snap.order[0]))


def test_aggregate_fits_but_no_single_numa_node_does() -> None:
    # cell 0 has the cores but no VFs, cell 1 has the VFs but not the cores: the site's
    # best-cell summary passes every column, yet no one cell holds the member.
    split = (replace(ROOMY, vfs={"physnet1": 0}), replace(ROOMY, pcpus_used=26))
    snap = P.world([SiteDef("a", "r1", hosts=1, shapes=split)])
    need = vnf.Need(vcpus=8, dedicated=True, memory_mb=4096, vfs=(("physnet1", 2),))
    filt = feasible.filter_sites(snap, ask(need), feasible.default_checkers())
    assert bool(filt.mask[0])  # the site-level summary cannot tell
    desc = P.sample("vepc-upf")
    vc = desc.vdus[0].virtual_compute.model_copy(update={"hugepage_size": "none"})
    vdu = desc.vdus[0].model_copy(update={"virtual_compute": vc, "redundancy": vnf.Redundancy()})
    single = desc.model_copy(update={"vdus": [vdu]})
    result = Planner().plan(snap, single, "v")
    assert not result.feasible
    reason = result.host_reasons["upf"]["a"]
    assert "cell 0: 0 of 2 VFs on physnet1" in reason
    assert "cell 1: 2 of 8 pinned cores free" in reason
    # ... while the same need with remote VFs allowed fits that host
    relaxed = vc.model_copy(update={"numa_affinity": "preferred"})
    vdu2 = vdu.model_copy(update={"virtual_compute": relaxed})
    assert Planner().plan(snap, single.model_copy(update={"vdus": [vdu2]}), "v").feasible


SCORE_CASES = [
    # strategy, weights, expected order of sites (a: 0% used, b: 50% used, c: 90% used)
    ("spread", {}, ["a", "b", "c"]),
    ("pack", {}, ["c", "b", "a"]),
    ("spread", {"utilization": 0.0, "cost": 1.0}, ["c", "b", "a"]),  # c is cheapest
    ("pack", {"utilization": 1.0, "cost": 10.0}, ["c", "b", "a"]),
]


@pytest.mark.parametrize(("strategy", "weights", "order"), SCORE_CASES)
def test_scorers_rank(strategy: str, weights: dict[str, float], order: list[str]) -> None:
    sites = [
        SiteDef("a", "r1", shapes=(replace(ROOMY, pcpus_used=0),), labels={"cost": "3"}),
        SiteDef("b", "r1", shapes=(replace(ROOMY, pcpus_used=16),), labels={"cost": "2"}),
        SiteDef("c", "r1", shapes=(replace(ROOMY, pcpus_used=29),), labels={"cost": "1"}),
    ]
    snap = P.world(sites)
    prefs = vnf.Preferences(strategy=strategy, weights=vnf.Weights(**weights))  # type: ignore[arg-type]
    scores = score.combined(snap, ask(), prefs, score.default_scorers())
    ranked = [snap.order[i].id for i in np.argsort(-scores, kind="stable")]
    assert ranked == order
    assert ((scores >= 0) & (scores <= 1)).all()
