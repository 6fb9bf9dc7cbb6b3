"""``data_path`` on a connection point: only hosts offering it are feasible, and why not."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from broker import errors
from broker.models import codec, vnf
from broker.models.inventory import Inventory
from broker.placement import claims, feasible
from broker.placement.plan import Planner
from broker.placement.snapshot import Snapshot
from broker.store import keys
from tests.support import placement as P
from tests.support.placement import CellShape, SiteDef

DPDK = {"CUSTOM_OVS_DPDK": "true"}


def descriptor(data_path: str | None, vnic_type: str = "normal", members: int = 1) -> Any:
    data = vnf.to_json(P.sample("vims"))
    data["latency"] = {}
    data["vdus"][0]["redundancy"] = {"model": "active-active", "n": members, "min_sites": 1}
    data["vdus"][0]["anti_affinity"] = None
    cp: dict[str, Any] = {"name": "sip", "virtual_link": "sip", "vnic_type": vnic_type}
    if data_path:
        cp["data_path"] = data_path
    data["vdus"][0]["connection_points"] = [cp]
    return data


def world(dpdk_hosts: dict[str, set[int]], vfs: bool = True) -> Snapshot:
    """Sites of 4 hosts; ``dpdk_hosts[site]``: which hosts report CUSTOM_OVS_DPDK."""
    shape = CellShape() if vfs else CellShape(vfs={})
    sites = [SiteDef(s, f"r{i}", shapes=(shape, shape)) for i, s in enumerate(dpdk_hosts)]
    snap = P.world(sites)
    for i, (site, hosts) in enumerate(dpdk_hosts.items()):
        inv: Inventory = P.inventory(site, 4, (shape, shape))
        marked = tuple(
            dataclasses.replace(h, traits=DPDK if n in hosts else {})
            for n, h in enumerate(inv.hosts)
        )
        snap.apply(
            keys.inventory(site), codec.encode(dataclasses.replace(inv, hosts=marked)), 1000 + i
        )
    snap.arrays()
    return snap


def test_ovs_dpdk_members_land_only_on_dpdk_hosts() -> None:
    snap = world({"plain": set(), "dp": {2}})
    result = Planner().plan(snap, vnf.parse(descriptor("ovs-dpdk", members=1)), "x")
    assert result.feasible, result.reason
    assert [(a.site, a.claim.host) for a in result.assignments] == [("dp", "dp-cmp-002")]
    explained = result.explain(snap)
    reasons = {f["site"]: f["reason"] for f in explained["vdus"]["cscf"]["filtered"]}
    assert reasons["plain"] == "data-path: no host offers the data path ovs-dpdk (CUSTOM_OVS_DPDK)"


def test_no_dpdk_host_anywhere_is_infeasible_with_the_reason() -> None:
    snap = world({"a": set(), "b": set()})
    result = Planner().plan(snap, vnf.parse(descriptor("ovs-dpdk")), "x")
    assert not result.feasible
    assert result.explain(snap)["vdus"]["cscf"]["dropped_by"] == {"data-path": 2}


def test_members_spread_over_dpdk_hosts_only() -> None:
    snap = world({"dp": {0, 3}})
    result = Planner().plan(snap, vnf.parse(descriptor("ovs-dpdk", members=2)), "x")
    assert result.feasible, result.reason
    assert {a.claim.host for a in result.assignments} == {"dp-cmp-000", "dp-cmp-003"}
    three = Planner().plan(snap, vnf.parse(descriptor("ovs-dpdk", members=3)), "x")
    assert not three.feasible  # members spread over hosts, and only two offer ovs-dpdk


def test_kernel_and_unset_go_anywhere() -> None:
    snap = world({"a": set()})
    for path in ("kernel", None):
        assert Planner().plan(snap, vnf.parse(descriptor(path)), "x").feasible


def test_sriov_is_offered_by_vf_pools() -> None:
    data = descriptor("sriov", vnic_type="direct")
    data["virtual_links"][0] = {"name": "sip", "network_type": "vlan", "physnet": "physnet1"}
    assert Planner().plan(world({"a": set()}), vnf.parse(data), "x").feasible


def test_host_why_not_names_the_missing_trait() -> None:
    snap = world({"a": set()})
    host = snap.order[0].hosts[0]
    need = vnf.Need(vcpus=1, dedicated=False, memory_mb=1, data_paths=("ovs-dpdk",))
    assert claims.fits(host, need, "m") is None
    assert claims.why_not(host, need) == (
        "no ovs-dpdk data path on this host (CUSTOM_OVS_DPDK not offered)"
    )
    assert feasible.DataPathChecker().name == "data-path"


@pytest.mark.parametrize(("path", "vnic"), [("sriov", "normal"), ("ovs-dpdk", "direct")])
def test_data_path_must_match_the_vnic_type(path: str, vnic: str) -> None:
    data = descriptor(path, vnic_type=vnic)
    data["virtual_links"][0] = {"name": "sip", "network_type": "vlan", "physnet": "physnet1"}
    with pytest.raises(errors.InvalidInput) as caught:
        vnf.members(vnf.parse(data))
    assert caught.value.field == "vdus[0].connection_points[0].data_path"
