"""A stitched virtual link renders no per-site network: the ports attach to the one global
network by its name, and the stitching controller learns each site's ports from the plan."""

from __future__ import annotations

from broker.placement import render
from broker.placement.plan import Planner
from tests.support import placement as P


def test_a_stitched_link_is_one_network_over_the_member_sites() -> None:
    sites = P.regions(2)
    snap = P.world(sites, P.paris_latency(sites))
    desc = P.sample("stitched-pair")
    result = Planner().plan(snap, desc, "sp-1")
    assert result.feasible, result.reason
    objs = render.objects("sp-1", desc, result.assignments)
    placed = sorted({o.site for o in objs})
    assert len(placed) == 2

    networks = {(o.site, o.kind, o.name) for o in objs if o.kind in ("network", "subnet")}
    # mgmt is an isolated copy per site; sync has no per-site network or subnet
    assert networks == {(s, k, "sp-1-mgmt") for s in placed for k in ("network", "subnet")}
    ports = {o.name: o.spec["network"] for o in objs if o.kind == "port"}
    sync_ports = sorted(p for p, net in ports.items() if net == "sp-1-sync")
    assert len(sync_ports) == 2 and all(p.endswith("-sync") for p in sync_ports)

    members = [(a.member.name, a.member.vdu, a.site) for a in result.assignments]
    wanted = render.stitched_ports("sp-1", desc, members)
    assert list(wanted) == ["sp-1-sync"]
    by_site = wanted["sp-1-sync"]
    assert sorted(by_site) == placed
    assert sorted(p for ps in by_site.values() for p in ps) == sync_ports
