"""Layout of a network's block over its sites, MTU rules and the tunnel topology."""

from __future__ import annotations

import ipaddress

import pytest

from broker import errors
from broker.stitching import layout


def _range(a: str, b: str) -> set[int]:
    return set(range(int(ipaddress.IPv4Address(a)), int(ipaddress.IPv4Address(b)) + 1))


def test_l2_stretched_one_gateway_disjoint_pools() -> None:
    segs = layout.lay_out(layout.L2, "10.1.0.0/24", ["a", "b", "c"])
    assert {s.subnet for s in segs} == {"10.1.0.0/24"}
    assert {s.gateway for s in segs} == {"10.1.0.1"}
    assert [s.address for s in segs] == ["10.1.0.2/24", "10.1.0.86/24", "10.1.0.170/24"]
    seen: set[int] = {int(ipaddress.IPv4Address("10.1.0.1"))}
    for s in segs:
        own = _range(*s.pool) | {int(ipaddress.IPv4Interface(s.address).ip)}
        assert not own & seen
        assert _range(*s.dhcp) <= own
        seen |= own


def test_l3_routed_one_subnet_per_site_and_a_transit() -> None:
    segs = layout.lay_out(layout.L3, "10.2.0.0/22", ["a", "b", "c"])
    assert [s.subnet for s in segs] == ["10.2.0.0/24", "10.2.1.0/24", "10.2.2.0/24"]
    assert [s.gateway for s in segs] == ["10.2.0.1", "10.2.1.1", "10.2.2.1"]
    assert [s.transit for s in segs] == ["10.2.3.1/24", "10.2.3.2/24", "10.2.3.3/24"]
    again = [layout.SiteSegment.from_json(s.as_json()) for s in segs]
    assert again == segs


@pytest.mark.parametrize(
    ("kind", "cidr", "n", "problem"),
    [
        (layout.L2, "10.0.0.0/29", 3, "too small for 3 sites"),
        (layout.L3, "10.0.0.0/28", 2, "ask for /27 or larger"),
        ("l2", "10.0.0.0/24", 2, "'l2' is not one of"),
    ],
)
def test_too_small_or_unknown_is_refused(kind: str, cidr: str, n: int, problem: str) -> None:
    with pytest.raises(errors.InvalidInput, match=problem):
        layout.lay_out(kind, cidr, [f"s{i}" for i in range(n)])


@pytest.mark.parametrize(
    ("mtus", "asked", "want", "problem"),
    [
        ([1500, 9000], None, 1450, ""),
        ([1500], 1400, 1400, ""),
        ([1500], 40, 0, "below the VXLAN tunnel overhead"),
        ([1500], 1460, 0, "at most 1450"),
        ([], None, 0, "no member site has a gateway endpoint"),
    ],
)
def test_inner_mtu(mtus: list[int], asked: int | None, want: int, problem: str) -> None:
    if problem:
        with pytest.raises(errors.InvalidInput, match=problem):
            layout.inner_mtu(mtus, asked)
    else:
        assert layout.inner_mtu(mtus, asked) == want


def test_full_mesh_then_hub_and_spoke() -> None:
    assert layout.peers(["a", "b", "c"], 3) == {"a": ["b", "c"], "b": ["a", "c"], "c": ["a", "b"]}
    assert layout.peers(["a", "b", "c"], 2) == {"a": ["b", "c"], "b": ["a"], "c": ["a"]}
