"""The site gateway's data plane for real: namespaces, bridges, VXLAN over a test WAN.

Three sites' gateways, each in its own namespace, are joined by a "WAN" (veths onto a
bridge in a namespace of the test's own, 198.18.0.0/24 inside those namespaces only). A
"VM" namespace per site sits on the site's segment of a stitched network. Pings and TCP
transfers between every pair of VMs must work, the gateways' own probes must agree, a
gateway rebuilt after a crash or a site reboot must bring its tunnels back, and a delete
must leave no tunnel, bridge, port or namespace. Needs root: fails (never skips) without.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
from collections.abc import Iterator

import pytest

from broker.stitching import layout, render
from siteagent.datapath import probe, spec, stitch
from siteagent.datapath.gateway import Gateway
from siteagent.datapath.stitch import StitchDriver
from siteagent.drivers.sim import SimSite
from siteagent.models import DesiredObject, ObjectState
from tests.support import netlab

pytestmark = [pytest.mark.netns, pytest.mark.slow]
# pyroute2's synchronous API runs its own event loop: the gateway is driven from plain
# (sync) tests, as the agent drives it from a worker thread; probes run under asyncio.run

SITES = ["s0", "s1", "s2"]
VNI = 4242


@pytest.fixture
def lab() -> Iterator[netlab.Lab]:
    with netlab.lab_for_test(SITES) as made:
        yield made


@pytest.fixture
def sockets() -> Iterator[dict[str, probe.Sockets]]:
    made: dict[str, probe.Sockets] = {}
    yield made
    for s in made.values():
        s.close()


def pings(ns: str, address: str) -> bool:
    out = netlab.sh(
        "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-w", "5", address, ns=ns, check=False
    )
    return " 0 received" not in out and "received" in out


async def transfer(src: probe.Sockets, dst: probe.Sockets, address: str) -> bool:
    """Send 1 MiB over TCP from ``src``'s namespace to ``dst``'s; True if it all arrived."""
    loop = asyncio.get_running_loop()
    payload = os.urandom(1 << 20)
    listener = await dst.socket()
    listener.bind((address, 5001))
    listener.listen(1)
    got = hashlib.sha256()

    async def serve() -> None:
        conn, _ = await loop.sock_accept(listener)
        with conn:
            while chunk := await loop.sock_recv(conn, 65536):
                got.update(chunk)

    server = asyncio.create_task(serve())
    client = await src.socket()
    try:
        async with asyncio.timeout(20):
            await loop.sock_connect(client, (address, 5001))
            await loop.sock_sendall(client, payload)
            client.close()
            await server
    finally:
        client.close()
        listener.close()
    return got.digest() == hashlib.sha256(payload).digest()


def leftovers(gw: Gateway, vni: int) -> list[str]:
    """Devices of network ``vni`` (or any port) still in the gateway namespace."""
    links = gw.kernel.links()
    return [n for n in links if spec.vni_of(n) == vni or n not in ("lo", gw.endpoint.device)]


def vm_address(segment: layout.SiteSegment) -> str:
    plen = segment.subnet.split("/")[1]
    return f"{segment.pool[0]}/{plen}"


def test_l2_stretched_three_sites_ping_tcp_verify_rebuild_delete(
    lab: netlab.Lab, sockets: dict[str, probe.Sockets]
) -> None:
    cidr = "10.77.0.0/24"
    specs = lab.specs(layout.L2, cidr, VNI, SITES)
    segs = {s.site: s for s in layout.lay_out(layout.L2, cidr, SITES)}
    assert all(s.mtu == 1450 for s in specs.values())  # 1500 underlay - 50 of VXLAN
    for site in SITES:
        lab.gateway(site).reconcile([specs[site]])
    vms = {site: lab.vm(site, specs[site], vm_address(segs[site])) for site in SITES}
    addr = {site: segs[site].pool[0] for site in SITES}

    for a, b in itertools.permutations(SITES, 2):
        assert pings(vms[a], addr[b]), f"VM at {a} cannot ping VM at {b}"
    for site in SITES:
        sockets[site] = probe.Sockets(vms[site])
    for a, b in itertools.combinations(SITES, 2):
        assert asyncio.run(transfer(sockets[a], sockets[b], addr[b])), f"TCP {a} -> {b} failed"

    results = asyncio.run(verify(lab, specs))
    assert [r for r in results if not r.ok] == []
    assert len(results) == 6 and all(r.loss == 0.0 for r in results)

    # a crash left s1 without its tunnel: a restarted agent's gateway rebuilds it
    lab.gateways["s1"].kernel.delete_link(specs["s1"].vxlan(0))
    assert not pings(vms["s0"], addr["s1"])
    lab.gateways["s1"].close()
    lab.gateway("s1").reconcile([specs["s1"]])
    assert pings(vms["s0"], addr["s1"]) and pings(vms["s1"], addr["s2"])

    # s2 reboots: its namespace (and the VM port in it) is gone; the agent rebuilds it
    lab.gateways["s2"].destroy()
    netlab.sh("ip", "netns", "del", vms["s2"])
    lab.plug(2)
    again = lab.gateway("s2")
    again.reconcile([specs["s2"]])
    again.reconcile([specs["s2"]])  # converged: a second pass changes nothing
    vms["s2"] = lab.vm("s2", specs["s2"], vm_address(segs["s2"]))
    for a, b in itertools.permutations(SITES, 2):
        assert pings(vms[a], addr[b]), f"after the rebuild, {a} cannot ping {b}"

    for site in SITES:
        lab.gateways[site].reconcile([])  # the network is deleted everywhere
        assert leftovers(lab.gateways[site], VNI) == []
        lab.gateways[site].destroy()
    assert [n for n in lab.namespaces() if "gw" in n] == []


async def verify(lab: netlab.Lab, specs: dict[str, spec.NetworkSpec]) -> list[probe.PairResult]:
    """Every gateway probes every peer gateway's address on the network."""
    gw_sockets = {s: probe.Sockets(lab.gateways[s].endpoint.namespace) for s in specs}
    responders = [probe.Responder(gw_sockets[s]) for s in specs]
    try:
        for r in responders:
            await r.start()
        rounds = [
            probe.probe(
                site,
                gw_sockets[site],
                [(p, specs[p].address.split("/")[0]) for p in specs if p != site],
            )
            for site in specs
        ]
        return [r for found in await asyncio.gather(*rounds) for r in found]
    finally:
        for r in responders:
            await r.stop()
        for s in gw_sockets.values():
            s.close()


def test_l3_routed_two_sites_route_between_subnets(
    lab: netlab.Lab, sockets: dict[str, probe.Sockets]
) -> None:
    sites = ["s0", "s1"]
    cidr = "10.78.0.0/22"
    specs = lab.specs(layout.L3, cidr, VNI + 1, sites)
    segs = {s.site: s for s in layout.lay_out(layout.L3, cidr, sites)}
    for site in sites:
        lab.gateway(site).reconcile([specs[site]])
    vms = {s: lab.vm(s, specs[s], vm_address(segs[s]), segs[s].gateway) for s in sites}
    assert segs["s0"].subnet != segs["s1"].subnet
    assert pings(vms["s0"], segs["s1"].pool[0]) and pings(vms["s1"], segs["s0"].pool[0])
    results = asyncio.run(verify(lab, specs))
    assert [r for r in results if not r.ok] == []


def test_hub_and_spoke_beyond_the_mesh_size(
    lab: netlab.Lab, sockets: dict[str, probe.Sockets]
) -> None:
    cidr = "10.79.0.0/24"
    specs = lab.specs(layout.L2, cidr, VNI + 2, SITES, max_mesh=2)
    assert [len(specs[s].links) for s in SITES] == [2, 1, 1]  # s0 is the hub
    segs = {s.site: s for s in layout.lay_out(layout.L2, cidr, SITES)}
    for site in SITES:
        lab.gateway(site).reconcile([specs[site]])
    vms = {site: lab.vm(site, specs[site], vm_address(segs[site])) for site in SITES}
    for a, b in itertools.permutations(SITES, 2):  # s1 <-> s2 only through the hub
        assert pings(vms[a], segs[b].pool[0]), f"{a} cannot reach {b}"


async def test_the_agent_driver_builds_verifies_and_deletes_after_a_restart(
    lab: netlab.Lab,
) -> None:
    """The agent's StitchDriver on the objects the broker renders, end to end in the kernel."""
    sites = ["s0", "s1"]
    drivers = {
        s: StitchDriver(SimSite.generated(s), s, lab.endpoint(s), probe.PROBE_PORT) for s in sites
    }
    restarted: StitchDriver | None = None
    try:
        eps = {}
        for s in sites:
            st = await drivers[s].apply(DesiredObject(stitch.ENDPOINT, "gateway", 1, {}))
            assert st.state is ObjectState.READY
            eps[s] = render.GatewayEndpoint(s, st.outputs["address"], int(st.outputs["mtu"]))
        assert eps["s1"].address == "198.18.0.11" and eps["s1"].mtu == 1500
        docs = render.stitch_objects("blue", layout.L2, "10.80.0.0/24", 5151, 1450, sites, eps, 16)
        for s in sites:
            await drivers[s].apply(DesiredObject(stitch.STITCH, "blue", 1, docs[s]))
        nets = {s: spec.from_json(docs[s]) for s in sites}
        segs = {s.site: s for s in layout.lay_out(layout.L2, "10.80.0.0/24", sites)}
        vms = {s: await asyncio.to_thread(lab.vm, s, nets[s], vm_address(segs[s])) for s in sites}
        assert await asyncio.to_thread(pings, vms["s0"], segs["s1"].pool[0])

        targets = [["s1", segs["s1"].address.split("/")[0]]]
        got = await drivers["s0"].apply(
            DesiredObject(stitch.VERIFY, "blue", 1, {"nonce": "n1", "targets": targets})
        )
        results = json.loads(got.outputs["results"])
        assert got.outputs["nonce"] == "n1"
        assert [(r["target"], r["icmp"], r["tcp"]) for r in results] == [("s1", True, True)]

        await drivers["s1"].close()  # the agent restarts: nothing in memory survives
        restarted = StitchDriver(
            SimSite.generated("s1"), "s1", lab.endpoint("s1"), probe.PROBE_PORT
        )
        gone = await restarted.delete(stitch.STITCH, "blue")
        assert gone.state is ObjectState.DELETED
        left = netlab.sh("ip", "-o", "link", ns=lab.endpoint("s1").namespace)
        assert "br-5151" not in left and "vx-5151" not in left and "@" not in left.split("lo:")[0]
        assert not await asyncio.to_thread(pings, vms["s0"], segs["s1"].pool[0])
    finally:
        for d in (drivers["s0"], restarted):
            if d is not None:
                await d.close()
