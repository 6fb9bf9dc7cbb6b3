"""Per-site ``network_stitch`` objects: symmetric tunnels, mesh then hub, l3 routes."""

from __future__ import annotations

import ipaddress

import pytest

from broker import errors
from broker.stitching import layout, render
from siteagent.datapath import spec

SITES = ["a", "b", "c", "d"]
EPS = {s: render.GatewayEndpoint(s, f"192.0.2.{i + 1}", 1500) for i, s in enumerate(SITES)}
IP = {e.address: s for s, e in EPS.items()}


@pytest.mark.parametrize("max_mesh", [4, 3, 2])
def test_tunnels_are_symmetric(max_mesh: int) -> None:
    objs = render.stitch_objects("n", layout.L2, "10.0.0.0/24", 7, 1450, SITES, EPS, max_mesh)
    edges = set()
    for site, doc in objs.items():
        net = spec.from_json(doc)
        for link in net.links:
            edges |= {(site, IP[p], link.port) for p in link.peers}
    assert edges == {(b, a, port) for a, b, port in edges}
    if max_mesh >= len(SITES):
        assert len(edges) == 12 and {p for *_, p in edges} == {render.VXLAN_PORT}
    else:  # hub-and-spoke around "a": one port per spoke
        assert {(x, y) for x, y, _ in edges if "a" not in (x, y)} == set()
        assert len({p for *_, p in edges}) == 3


def test_l2_home_site_carries_the_gateway_and_l3_routes_every_other_subnet() -> None:
    l2 = render.stitch_objects("n", layout.L2, "10.0.0.0/24", 7, 1450, SITES, EPS, 16)
    assert spec.from_json(l2["a"]).extra_addresses == ("10.0.0.1/24",)
    assert spec.from_json(l2["b"]).extra_addresses == ()
    l3 = render.stitch_objects("n", layout.L3, "10.1.0.0/21", 8, 1450, SITES, EPS, 16)
    b = spec.from_json(l3["b"])
    assert (b.address, b.transit) == ("10.1.1.1/24", "10.1.7.2/24")
    assert {(r.destination, r.via) for r in b.routes} == {
        ("10.1.0.0/24", "10.1.7.1"),
        ("10.1.2.0/24", "10.1.7.3"),
        ("10.1.3.0/24", "10.1.7.4"),
    }
    spoke = render.stitch_objects("n", layout.L3, "10.1.0.0/21", 8, 1450, SITES, EPS, 2)
    assert {r["via"] for r in spoke["c"]["routes"]} == {"10.1.7.1"}  # type: ignore[index]


def test_ports_get_the_next_addresses_of_their_site_pool() -> None:
    ports = {"a": ["vnf-m0-sync", "vnf-m2-sync"], "b": ["vnf-m1-sync"]}
    objs = render.stitch_objects(
        "n", layout.L2, "10.0.0.0/24", 7, 1450, SITES, EPS, 16, project="p", ports=ports
    )
    a_pool = objs["a"]["segment"]["allocation_pool"]  # type: ignore[index]
    assert objs["a"]["ports"] == [
        {"name": "vnf-m0-sync", "address": f"{a_pool[0]}/24"},
        {"name": "vnf-m2-sync", "address": f"{ipaddress.IPv4Address(a_pool[0]) + 1}/24"},
    ]
    assert [p["name"] for p in objs["b"]["ports"]] == ["vnf-m1-sync"]  # type: ignore[attr-defined]
    assert objs["c"]["ports"] == [] and objs["c"]["project"] == "p"
    with pytest.raises(errors.InvalidInput, match="do not fit site a's pool"):
        too_many = {"a": [f"p{i}" for i in range(200)]}
        render.stitch_objects(
            "n", layout.L2, "10.0.0.0/24", 7, 1450, SITES, EPS, 16, ports=too_many
        )
