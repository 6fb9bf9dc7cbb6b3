"""A stitched network over the two minicloud sites, through the agent's stitching driver
wrapped around the real openstack driver (the sites have no gateway namespace: their
interconnect is Neutron BGPVPN).

Checked from outside Meridian with openstacksdk, at each site: the network with the
inner MTU, its subnet with the site's allocated pool and the network's gateway, a BGPVPN
of the right type with the allocated route target and distinguisher associated with the
network, and for l3-routed a router with an interface on the site's subnet. Applying the
same objects again changes nothing (same ids, one of each); the tombstone leaves nothing.

Then through the whole stack: a federation (etcd, a broker, one agent per minicloud site)
where ``POST /v1/networks`` allocates and both agents build the Neutron objects with the
allocated values (READY), and ``DELETE`` removes them from both Neutrons.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.stitching import layout, render
from siteagent import models
from siteagent.datapath import stitch
from siteagent.datapath.stitch import StitchDriver
from siteagent.drivers.openstack import OpenStackDriver
from siteagent.drivers.openstack_support import cloud_name, connect
from tests.support.minicloud import CLOUD, PROJECT, Minicloud
from tests.support.osfed import OpenStackFederation
from tests.support.polling import wait_for

pytestmark = [pytest.mark.openstack, pytest.mark.etcd, pytest.mark.slow]

CLOUDS = {"os-a": CLOUD, "os-b": "minicloud-site2"}
RT = "64512:4242"


@pytest.fixture
async def drivers(minicloud: Minicloud) -> AsyncIterator[dict[str, StitchDriver]]:
    run = uuid.uuid4().hex[:6]  # site ids of their own: names never collide between runs
    made = {
        site: StitchDriver(OpenStackDriver(f"{site}-{run}", cloud, timeout=60.0), site, None, 0)
        for site, cloud in CLOUDS.items()
    }
    yield made
    for drv in made.values():
        await drv.close()


def conns() -> dict[str, Any]:
    return {site: connect(cloud=cloud) for site, cloud in CLOUDS.items()}


async def build(drivers: dict[str, StitchDriver], kind: str, cidr: str) -> dict[str, Any]:
    eps = {}
    for site, drv in drivers.items():
        st = await drv.apply(models.DesiredObject(stitch.ENDPOINT, "gateway", 1, {}))
        assert st.state is models.ObjectState.READY, st
        assert st.outputs["interconnect"] == "bgpvpn" and st.outputs["address"] == ""
        eps[site] = render.GatewayEndpoint(site, "", int(st.outputs["mtu"]))
    mtu = layout.inner_mtu([e.mtu for e in eps.values()], None)
    sites = list(drivers)
    return render.stitch_objects(
        "stitched", kind, cidr, 4242, mtu, sites, eps, 16, project=PROJECT, route_target=RT
    )


async def apply(
    drivers: dict[str, StitchDriver], docs: dict[str, Any]
) -> dict[str, dict[str, str]]:
    out = {}
    for site, drv in drivers.items():
        st = await drv.apply(models.DesiredObject(stitch.STITCH, "stitched", 1, docs[site]))
        assert st.state is models.ObjectState.READY, st
        out[site] = dict(st.outputs)
    return out


def neutron_view(drivers: dict[str, StitchDriver], site: str, conn: Any) -> dict[str, Any]:
    """What Neutron holds at ``site`` for the network: ids and the values checked."""
    name = cloud_name(drivers[site].inner.site, "stitched")  # type: ignore[attr-defined]
    nets = list(conn.network.networks(name=name))
    subnets = list(conn.network.subnets(name=name))
    vpns = [v for v in conn.network.bgpvpns() if v.name == name]  # no filter by name
    routers = list(conn.network.routers(name=name))
    view: dict[str, Any] = {"networks": nets, "subnets": subnets, "bgpvpns": vpns}
    view["routers"] = routers
    view["assocs"] = [a for v in vpns for a in conn.network.bgpvpn_network_associations(v)]
    view["ids"] = sorted(str(x.id) for objs in (nets, subnets, vpns, routers) for x in objs)
    return view


async def test_l2_stretched_builds_bgpvpns_idempotently_and_deletes_cleanly(
    drivers: dict[str, StitchDriver],
) -> None:
    docs = await build(drivers, layout.L2, "10.93.0.0/24")
    outputs = await apply(drivers, docs)
    clients = conns()
    try:
        first = {}
        for site, conn in clients.items():
            view = neutron_view(drivers, site, conn)
            seg = docs[site]["segment"]
            (net,), (subnet,), (vpn,) = view["networks"], view["subnets"], view["bgpvpns"]
            assert net.mtu == 1450
            assert (subnet.cidr, subnet.gateway_ip) == ("10.93.0.0/24", "10.93.0.1")
            assert [(p["start"], p["end"]) for p in subnet.allocation_pools] == [
                tuple(seg["allocation_pool"])
            ]
            assert (vpn.type, vpn.route_targets, vpn.route_distinguishers) == ("l2", [RT], [RT])
            assert [a.network_id for a in view["assocs"]] == [net.id]
            assert view["routers"] == []
            assert outputs[site]["bgpvpn"] == vpn.id and outputs[site]["route_target"] == RT
            first[site] = view["ids"]
        pools = [tuple(docs[s]["segment"]["allocation_pool"]) for s in drivers]
        assert pools[0] != pools[1]  # disjoint per site

        await apply(drivers, docs)  # the same generation again: nothing new
        for site, conn in clients.items():
            assert neutron_view(drivers, site, conn)["ids"] == first[site]

        for drv in drivers.values():
            gone = await drv.delete(stitch.STITCH, "stitched")
            assert gone.state is models.ObjectState.DELETED
        for site, conn in clients.items():
            assert neutron_view(drivers, site, conn)["ids"] == [], f"left at {site}"
    finally:
        for conn in clients.values():
            conn.close()


async def test_l3_routed_adds_a_router_on_each_sites_subnet(
    drivers: dict[str, StitchDriver],
) -> None:
    docs = await build(drivers, layout.L3, "10.94.0.0/22")
    await apply(drivers, docs)
    clients = conns()
    try:
        for site, conn in clients.items():
            view = neutron_view(drivers, site, conn)
            seg = docs[site]["segment"]
            (subnet,), (vpn,), (router,) = view["subnets"], view["bgpvpns"], view["routers"]
            assert (subnet.cidr, subnet.gateway_ip) == (seg["subnet"], seg["gateway"])
            assert (vpn.type, vpn.route_targets) == ("l3", [RT])
            ports = list(conn.network.ports(device_id=router.id))
            assert [ip["ip_address"] for p in ports for ip in p.fixed_ips] == [seg["gateway"]]
        await apply(drivers, docs)
        for site, conn in clients.items():
            assert len(neutron_view(drivers, site, conn)["routers"]) == 1
        for drv in drivers.values():
            await drv.delete(stitch.STITCH, "stitched")
        for site, conn in clients.items():
            assert neutron_view(drivers, site, conn)["ids"] == [], f"left at {site}"
    finally:
        for conn in clients.values():
            conn.close()


@pytest.fixture(scope="module")
def fed(minicloud: Minicloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    sites = {"os-st-a": CLOUD, "os-st-b": CLOUDS["os-b"]}
    fed = OpenStackFederation(
        state=Path(tmp_path_factory.mktemp("os-stitch")), brokers=1, clouds=sites
    )
    try:
        fed.up(list(sites))
        states = fed.wait_all_up(list(sites), timeout=180)
        assert all(states.get(s) == "UP" for s in sites), states
        yield fed
    finally:
        fed.down()


def test_the_api_builds_and_deletes_the_network_at_both_sites(fed: Any) -> None:
    name = f"st-{uuid.uuid4().hex[:6]}"
    sites = list(fed.clouds)
    body = {"name": name, "tenant": PROJECT, "type": "l2-stretched", "sites": sites}

    def created() -> Any:  # the agents report their (BGPVPN) endpoints first
        resp = fed.call("POST", "/v1/networks", json=body)
        return resp if resp.status_code != 422 else None

    resp = wait_for(created, timeout=60, what="both sites' endpoints")
    assert resp.status_code in (201, 202), resp.text

    def ready() -> Any:
        got = fed.call("GET", f"/v1/networks/{name}").json()
        assert got["state"] not in ("FAILED", "DEGRADED"), got
        return got if got["state"] == "READY" else None

    net = wait_for(ready, timeout=120, what=f"{name} READY")
    segs = {s["site"]: s for s in net["segments"]}
    clients = {site: connect(cloud=cloud) for site, cloud in fed.clouds.items()}
    try:
        for site, conn in clients.items():
            cname = cloud_name(site, name)
            (neutron_net,) = conn.network.networks(name=cname)
            (subnet,) = conn.network.subnets(name=cname)
            (vpn,) = [v for v in conn.network.bgpvpns() if v.name == cname]
            assert neutron_net.mtu == net["mtu"] == 1450
            assert subnet.cidr == net["cidr"]
            assert [(p["start"], p["end"]) for p in subnet.allocation_pools] == [
                tuple(segs[site]["allocation_pool"])
            ]
            assert vpn.route_targets == [net["route_target"]]
            assocs = list(conn.network.bgpvpn_network_associations(vpn))
            assert [a.network_id for a in assocs] == [neutron_net.id]

        assert fed.call("DELETE", f"/v1/networks/{name}").status_code == 202
        wait_for(
            lambda: fed.call("GET", f"/v1/networks/{name}").status_code == 404,
            timeout=120,
            what=f"{name} deleted",
        )
        for site, conn in clients.items():
            cname = cloud_name(site, name)
            assert list(conn.network.networks(name=cname)) == []
            assert list(conn.network.subnets(name=cname)) == []
            assert [v for v in conn.network.bgpvpns() if v.name == cname] == []
    finally:
        for conn in clients.values():
            conn.close()
