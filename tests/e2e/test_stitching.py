"""Stitched networks through the whole stack: API → leader → agents → kernel → verify.

etcd, 3 broker processes and 3 agent processes, each agent owning a real gateway
namespace whose underlay is a veth onto the test's own WAN bridge (198.18.0.0/24, inside
the test's namespaces only). ``POST /v1/networks`` allocates and the agents build the
tunnels; VMs (namespaces) at every site ping each other; ``verify`` agrees; an agent
killed with -9 and restarted after its tunnel was lost brings it back; ``DELETE`` leaves no
tunnel, bridge or port. Needs root: fails (never skips) without.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from broker.devfed.federation import Federation
from broker.stitching import layout
from siteagent.datapath import spec
from tests.support import netlab
from tests.support.federation import running_federation
from tests.e2e.test_vnf import active, create
from tests.support.stitchfed import call, gateway_sections, until

pytestmark = [pytest.mark.netns, pytest.mark.slow]

SITES = ["gw-a", "gw-b", "gw-c"]


@pytest.fixture(scope="module")
def lab() -> Iterator[netlab.Lab]:
    with netlab.lab_for_test(SITES) as made:
        yield made


@pytest.fixture(scope="module")
def fed(lab: netlab.Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    state = Path(tmp_path_factory.mktemp("stitching"))
    with running_federation(state, SITES, agent_sections=gateway_sections(lab)) as fed:
        yield fed


def test_create_ping_verify_restart_delete(lab: netlab.Lab, fed: Federation) -> None:
    body = {"name": "sync", "tenant": "t1", "type": "l2-stretched", "sites": SITES}

    def created() -> httpx.Response | None:  # the agents report their endpoints first
        resp = call(fed, "POST", "/v1/networks", json=body)
        return resp if resp.status_code != 422 else None

    resp = until(created, 60, "every site's gateway endpoint")
    assert resp.status_code == 201, resp.text
    net = resp.json()
    assert net["mtu"] == 1450
    until(lambda: call(fed, "GET", "/v1/networks/sync").json()["state"] == "READY", 60, "READY")

    vni = int(net["vni"])
    segs = {s["site"]: s for s in net["segments"]}
    plen = net["cidr"].split("/")[1]
    shape = spec.NetworkSpec("sync", layout.L2, vni, net["mtu"], "", ())
    vms = {s: lab.vm(s, shape, f"{segs[s]['allocation_pool'][0]}/{plen}") for s in SITES}
    for a, b in itertools.permutations(SITES, 2):
        assert ping(vms[a], segs[b]["allocation_pool"][0]), f"{a} cannot reach {b}"

    report = call(fed, "POST", "/v1/networks/sync/verify").json()
    assert report["ok"], report
    assert len(report["pairs"]) == 6 and report["missing"] == []

    # gw-b's agent dies and its tunnel is lost meanwhile; the restarted agent rebuilds it
    gw_b = lab.endpoint("gw-b").namespace
    fed.kill("agent-gw-b")
    netlab.sh("ip", "link", "del", f"vx-{vni}", ns=gw_b)
    assert not ping(vms["gw-a"], segs["gw-b"]["allocation_pool"][0])
    fed.start_agents(["gw-b"])
    until(lambda: ping(vms["gw-a"], segs["gw-b"]["allocation_pool"][0]), 60, "tunnel rebuilt")

    assert call(fed, "DELETE", "/v1/networks/sync").status_code == 202
    until(lambda: call(fed, "GET", "/v1/networks/sync").status_code == 404, 60, "deleted")
    for site in SITES:
        links = netlab.sh("ip", "-o", "link", ns=lab.endpoint(site).namespace)
        assert f"br-{vni}" not in links and f"vx-{vni}" not in links, links
        names = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()]
        assert sorted(names) == sorted(["lo", lab.endpoint(site).device]), names


def ping(ns: str, address: str) -> bool:
    out = netlab.sh(
        "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-w", "3", address, ns=ns, check=False
    )
    return " 0 received" not in out and "received" in out


def test_a_vnfs_members_reach_each_other_over_its_stitched_link(
    lab: netlab.Lab, fed: Federation
) -> None:
    """A VNF whose ``sync`` link is stitched: its two members (namespaces the sim sites'
    agents attach to their gateway bridges) reach each other across the sites; the network
    cannot be deleted while the VNF exists, and goes with it, leaving no namespace."""
    room = dict.fromkeys(["cores", "ram_mb"], 10**6)
    assert call(fed, "PUT", "/v1/quotas/acme-nfv", json={"limits": room}).status_code == 200
    vnf_id = create(fed, "stitched-pair")
    vnf = active(fed, vnf_id)
    sites = sorted({m["site"] for m in vnf["members"]})
    assert len(sites) == 2
    name = f"{vnf_id}-sync"
    net = until(lambda: ready(fed, name), 60, f"{name} READY")
    assert sorted(net["sites"]) == sites and net["vnfs"] == [vnf_id]

    plen = net["cidr"].split("/")[1]
    segs = {s["site"]: s for s in net["segments"]}
    members = {}
    for site in sites:
        (port,) = net["ports"][site]
        gw_ns = lab.endpoint(site).namespace
        ns, inside, _ = spec.member_names(gw_ns, int(net["vni"]), port)
        address = segs[site]["allocation_pool"][0]
        assert f"{address}/{plen}" in netlab.sh("ip", "-o", "addr", "show", inside, ns=ns)
        members[site] = (ns, address)
    a, b = sites
    assert ping(members[a][0], members[b][1]), f"member at {a} cannot reach the one at {b}"
    assert ping(members[b][0], members[a][1]), f"member at {b} cannot reach the one at {a}"

    refused = call(fed, "DELETE", f"/v1/networks/{name}")
    assert refused.status_code == 409 and refused.json()["vnfs"] == [vnf_id], refused.text

    assert call(fed, "DELETE", f"/v1/vnfs/{vnf_id}").status_code == 202
    until(lambda: call(fed, "GET", f"/v1/networks/{name}").status_code == 404, 90, "net gone")
    left = [ns for ns in netlab.netlink.namespaces() if "-m" in ns and ns.startswith("mlab")]
    assert left == [], left


def ready(fed: Federation, name: str) -> dict[str, object] | None:
    resp = call(fed, "GET", f"/v1/networks/{name}")
    return resp.json() if resp.status_code == 200 and resp.json()["state"] == "READY" else None
