"""Relay fan-out planner: examples plus hypothesis properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replication import errors, planner
from replication.catalog import SiteId


def sites(n: int, prefix: str = "d") -> list[SiteId]:
    return [SiteId(f"{prefix}{i:03d}") for i in range(n)]


def check(p: planner.Plan, seeds: set[SiteId], dests: set[SiteId], cap: int) -> None:
    have = set(seeds)
    served: list[SiteId] = []
    for rnd in p.rounds:
        per_source: dict[SiteId, int] = {}
        for hop in rnd:
            assert hop.source in have, "a source must hold the image before its round"
            assert hop.destination not in have
            per_source[hop.source] = per_source.get(hop.source, 0) + 1
            served.append(hop.destination)
        assert max(per_source.values()) <= cap
        have |= {h.destination for h in rnd}
    assert len(served) == len(set(served)), "no site receives twice"
    assert set(served) == dests - seeds


@given(n=st.integers(0, 300), cap=st.integers(1, 4))
def test_single_seed_log_rounds(n: int, cap: int) -> None:
    dests = set(sites(n))
    p = planner.plan([SiteId("src")], dests, cap=cap)
    check(p, {SiteId("src")}, dests, cap)
    assert len(p.rounds) <= math.ceil(math.log2(n + 1))


@given(
    seeds=st.sets(st.integers(0, 50), min_size=1, max_size=5),
    dests=st.sets(st.integers(0, 50), max_size=50),
    cap=st.integers(1, 3),
)
def test_many_seeds_overlapping_destinations(seeds: set[int], dests: set[int], cap: int) -> None:
    s = {SiteId(f"s{i}") for i in seeds}
    d = {SiteId(f"s{i}") for i in dests}
    p = planner.plan(s, d, cap=cap)
    check(p, s, d, cap)
    assert len(p.rounds) <= math.ceil(math.log2(len(d - s) + 1))


@pytest.mark.parametrize(
    ("n", "rounds"), [(0, 0), (1, 1), (2, 2), (3, 2), (4, 3), (7, 3), (8, 4), (15, 4), (16, 5)]
)
def test_round_counts_cap_one(n: int, rounds: int) -> None:
    assert len(planner.plan([SiteId("src")], sites(n)).rounds) == rounds


def test_priority_destinations_first() -> None:
    p = planner.plan([SiteId("src")], sites(4), priority={SiteId("d003"): 100})
    assert p.rounds[0][0].destination == "d003"


def test_zero_cap_site_only_receives() -> None:
    p = planner.plan([SiteId("src")], sites(3), caps={SiteId("d000"): 0})
    assert all(h.source != "d000" for h in p.hops)
    assert set(p.source_of()) == set(sites(3))


@pytest.mark.parametrize(
    ("holders", "cap", "caps"),
    [([], 1, None), ([SiteId("a")], 0, None), ([SiteId("a")], 1, {SiteId("a"): 0})],
)
def test_impossible_plans_are_errors(
    holders: list[SiteId], cap: int, caps: dict[SiteId, int] | None
) -> None:
    with pytest.raises(errors.InvalidImage):
        planner.plan(holders, sites(2), cap=cap, caps=caps)
