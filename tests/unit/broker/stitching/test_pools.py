"""The pure pools: tables for the edges, hypothesis for random create/delete sequences."""

from __future__ import annotations

import ipaddress
import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import errors
from broker.stitching.pools import AddressSpace, IntPool

N = ipaddress.IPv4Network


def test_int_pool_next_fit_wraps_and_refuses_with_what_is_left() -> None:
    pool = IntPool("vni", 10, 12)
    assert [pool.allocate("a"), pool.allocate("b"), pool.allocate("c")] == [10, 11, 12]
    with pytest.raises(errors.PoolExhausted, match=r"all 3 values .* 0 of 3 free"):
        pool.allocate("d")
    pool.release(11)
    assert pool.allocate("d") == 11
    with pytest.raises(errors.AddressOverlap, match="held by a"):
        pool.allocate("e", want=10)
    with pytest.raises(errors.PoolExhausted, match=r"outside 10\.\.12"):
        pool.allocate("e", want=99)


@pytest.mark.parametrize(
    ("held", "ask", "problem"),
    [
        (["10.0.0.0/24"], "10.0.0.128/25", "overlaps 10.0.0.0/24 (x)"),
        (["10.0.0.0/25"], "10.0.0.0/16", "overlaps 10.0.0.0/25 (x)"),
        (["10.0.1.0/24", "10.0.3.0/24"], "10.0.0.0/22", "10.0.1.0/24 (x), 10.0.3.0/24 (x)"),
    ],
)
def test_asked_block_overlapping_anything_is_refused(
    held: list[str], ask: str, problem: str
) -> None:
    space = AddressSpace()
    for h in held:
        space.take(N(h), "x")
    with pytest.raises(errors.AddressOverlap, match=re.escape(problem)):
        space.take(N(ask), "y")
    assert [str(n) for n, _ in space.held()] == held  # nothing half-taken


def test_allocation_skips_external_prefixes_and_says_what_is_left() -> None:
    space = AddressSpace()
    space.take(N("10.0.0.0/26"), "external")
    got = [space.allocate([N("10.0.0.0/24")], 26, f"n{i}") for i in range(3)]
    assert [str(g) for g in got] == ["10.0.0.64/26", "10.0.0.128/26", "10.0.0.192/26"]
    exhausted = r"no free /26 in 10.0.0.0/24 \(free there: nothing\)"
    with pytest.raises(errors.PoolExhausted, match=exhausted):
        space.allocate([N("10.0.0.0/24")], 26, "n3")
    space.release(N("10.0.0.128/26"))
    with pytest.raises(errors.PoolExhausted, match="64 addresses, largest block /26"):
        space.allocate([N("10.0.0.0/24")], 25, "big")
    assert str(space.allocate([N("10.0.0.0/24")], 27, "small")) == "10.0.0.128/27"


def test_no_supernet_is_a_clear_refusal() -> None:
    with pytest.raises(errors.PoolExhausted, match="no supernet configured for t1"):
        AddressSpace().allocate([], 24, "t1")


ops = st.lists(
    st.tuples(
        st.sampled_from(["alloc", "free", "ask"]), st.integers(0, 2**16), st.integers(26, 30)
    ),
    max_size=120,
)


def _fits_somewhere(space: AddressSpace, sup: ipaddress.IPv4Network, prefixlen: int) -> bool:
    held = [n for n, _ in space.held()]
    return any(not any(c.overlaps(h) for h in held) for c in sup.subnets(new_prefix=prefixlen))


@settings(max_examples=150, deadline=None)
@given(ops)
def test_random_sequences_never_overlap_never_exhaust_early(
    seq: list[tuple[str, int, int]],
) -> None:
    sup = N("10.9.0.0/24")
    space = AddressSpace()
    space.take(N("10.9.0.64/28"), "external")
    mine: list[ipaddress.IPv4Network] = []
    for i, (op, pick, prefixlen) in enumerate(seq):
        if op == "free" and mine:
            space.release(mine.pop(pick % len(mine)))
        elif op == "ask":
            cand = list(sup.subnets(new_prefix=prefixlen))[pick % (1 << (prefixlen - 24))]
            try:
                space.take(cand, f"n{i}")
                mine.append(cand)
            except errors.AddressOverlap:
                assert any(cand.overlaps(n) for n, _ in space.held())
        else:
            fits = _fits_somewhere(space, sup, prefixlen)
            try:
                mine.append(space.allocate([sup], prefixlen, f"n{i}"))
                assert fits
            except errors.PoolExhausted:
                assert not fits, f"refused a /{prefixlen} that fits"
        held = sorted((n for n, _ in space.held()), key=lambda n: int(n.network_address))
        for a, b in itertools.pairwise(held):
            assert not a.overlaps(b), f"{a} and {b} overlap"
        assert all(n.subnet_of(sup) for n in held)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 1000)), max_size=200))
def test_int_pool_random_sequences(seq: list[tuple[bool, int]]) -> None:
    pool = IntPool("vlan", 100, 131)
    out: list[int] = []
    for i, (alloc, pick) in enumerate(seq):
        if alloc or not out:
            try:
                out.append(pool.allocate(f"o{i}"))
            except errors.PoolExhausted:
                assert len(out) == pool.size, "refused with values left"
        else:
            pool.release(out.pop(pick % len(out)))
        assert len(set(out)) == len(out)
        assert sorted(out) == sorted(pool.used)
        assert pool.left() == pool.size - len(out)
