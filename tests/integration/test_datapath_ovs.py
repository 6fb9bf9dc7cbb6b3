"""The data-path profile against a real ovs-vswitchd (userspace datapath), as root.

Each test module starts its own ovsdb-server + ovs-vswitchd in a directory of its own
(tests/support/ovs.py); names carry a random tag, because netdev bridges and internal
ports become tap devices on the machine. Foreign bridges, ports and other_config keys
(made with ovs-vsctl, as an operator would) must stay untouched.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support import hosttree, vmnet
from tests.support import ovs as ovs_support

from siteagent import errors
from siteagent.datapath import manager as dpm
from siteagent.datapath import ovs
from siteagent.datapath import profile as dp
from siteagent.hardware import writer

pytestmark = [pytest.mark.ovs]


@pytest.fixture(scope="module")
def switchd() -> Iterator[ovs_support.Ovs]:
    with ovs_support.running() as instance:
        yield instance


@pytest.fixture
def tag() -> str:
    return secrets.token_hex(2)


@pytest.fixture
def manager(switchd: ovs_support.Ovs, tmp_path: Path) -> Iterator[dpm.Manager]:
    tree = hosttree.lay_out(tmp_path)
    made = dpm.Manager(
        writer.SysfsWriter(tree), ovs.OvsSwitch(switchd.remote), hosttree.RecordingLinks()
    )
    yield made
    assert made.switch is not None
    made.remove()
    made.switch.close()


@pytest.fixture
def foreign(switchd: ovs_support.Ovs, tag: str) -> Iterator[str]:
    """A bridge, a port and an other_config key that are not Meridian's."""
    name = f"fx{tag}"
    switchd.vsctl("add-br", name, "--", "set", "bridge", name, "datapath_type=netdev")
    switchd.vsctl(
        "add-port", name, f"fp{tag}", "--", "set", "interface", f"fp{tag}", "type=internal"
    )
    switchd.vsctl("set", "Open_vSwitch", ".", "other_config:operator-key=keep")
    yield name
    switchd.vsctl("--if-exists", "del-br", name)


def profile_spec(tag: str, **other: str) -> dict[str, Any]:
    return {
        "ovs": {
            "other_config": {"pmd-cpu-mask": "0x6", "dpdk-socket-mem": "512,512", **other},
            "bridges": [
                {
                    "name": f"mb{tag}",
                    "datapath_type": "netdev",
                    "ports": [
                        {"name": f"mi{tag}", "type": "internal"},
                        {"name": f"mpa{tag}", "type": "patch", "peer": f"mpb{tag}"},
                        {"name": f"mv{tag}", "type": "vhost-user", "path": f"/tmp/mv{tag}.sock"},
                    ],
                    "flows": ["priority=5,actions=NORMAL", "priority=9,arp,actions=NORMAL"],
                },
                {
                    "name": f"mx{tag}",
                    "ports": [{"name": f"mpb{tag}", "type": "patch", "peer": f"mpa{tag}"}],
                },
            ],
        }
    }


def snapshot(switchd: ovs_support.Ovs, bridge: str) -> tuple[str, str, str]:
    return (
        switchd.vsctl("list-ports", bridge),
        switchd.vsctl("get", "Bridge", bridge, "external_ids", "datapath_type"),
        switchd.vsctl("get", "Open_vSwitch", ".", "other_config:operator-key"),
    )


def test_profile_applied_idempotent_and_foreign_untouched(
    switchd: ovs_support.Ovs, manager: dpm.Manager, foreign: str, tag: str
) -> None:
    before = snapshot(switchd, foreign)
    applied = manager.apply(dp.parse(profile_spec(tag)))
    assert f"bridge mb{tag} (netdev) set" in applied.changes
    assert switchd.vsctl("get", "Bridge", f"mb{tag}", "datapath_type") == "netdev"
    assert switchd.vsctl("get", "Open_vSwitch", ".", "other_config:pmd-cpu-mask") == '"0x6"'
    assert sorted(switchd.vsctl("list-ports", f"mb{tag}").split()) == sorted(
        [f"mi{tag}", f"mpa{tag}", f"mv{tag}"]
    )
    assert switchd.vsctl("get", "Interface", f"mpa{tag}", "options:peer") == f"mpb{tag}"
    assert switchd.vsctl("get", "Bridge", f"mb{tag}", "external_ids:meridian-owner") == "meridian"
    assert "priority=9,arp" in switchd.ofctl("dump-flows", f"mb{tag}")
    assert manager.apply(dp.parse(profile_spec(tag))).changes == ()
    assert manager.drift() == []
    assert manager.host_view().traits[dpm.OVS_DPDK] == "true"
    assert snapshot(switchd, foreign) == before

    manager.remove()
    assert switchd.vsctl("list-br").split() == [foreign] or f"mb{tag}" not in switchd.vsctl(
        "list-br"
    )
    assert "pmd-cpu-mask" not in switchd.vsctl("get", "Open_vSwitch", ".", "other_config")
    assert snapshot(switchd, foreign) == before


def test_hand_change_detected_and_corrected(
    switchd: ovs_support.Ovs, manager: dpm.Manager, tag: str
) -> None:
    manager.apply(dp.parse(profile_spec(tag)))
    switchd.vsctl("set", "Open_vSwitch", ".", "other_config:pmd-cpu-mask=0x3")
    switchd.vsctl("del-port", f"mb{tag}", f"mi{tag}")
    switchd.ofctl("add-flow", f"mb{tag}", "priority=50,actions=drop")
    found = manager.check_drift()
    assert found == [
        "other_config:pmd-cpu-mask is '0x3', profile says '0x6'",
        f"port mi{tag} is missing from mb{tag}",
        f"bridge mb{tag}: flows differ",
    ]
    assert switchd.vsctl("get", "Open_vSwitch", ".", "other_config:pmd-cpu-mask") == '"0x6"'
    assert f"mi{tag}" in switchd.vsctl("list-ports", f"mb{tag}").split()
    assert "actions=drop" not in switchd.ofctl("dump-flows", f"mb{tag}")
    assert manager.drift() == []
    assert [e.kind for e in manager.events][-3:] == ["drift", "applied", "corrected"]


def test_hand_change_only_reported_by_policy(
    switchd: ovs_support.Ovs, manager: dpm.Manager, tag: str
) -> None:
    manager.apply(dp.parse({**profile_spec(tag), "policy": "report"}))
    switchd.vsctl("set", "Open_vSwitch", ".", "other_config:pmd-cpu-mask=0x3")
    assert manager.check_drift() == ["other_config:pmd-cpu-mask is '0x3', profile says '0x6'"]
    assert switchd.vsctl("get", "Open_vSwitch", ".", "other_config:pmd-cpu-mask") == '"0x3"'
    assert manager.events[-1].kind == "drift"


def test_clash_with_a_foreign_bridge_changes_nothing(
    switchd: ovs_support.Ovs, manager: dpm.Manager, foreign: str, tag: str
) -> None:
    manager.apply(dp.parse(profile_spec(tag)))
    clash = profile_spec(tag, **{"pmd-cpu-mask": "0x2"})
    clash["ovs"]["bridges"].append({"name": foreign, "ports": [{"name": f"mz{tag}"}]})
    before = snapshot(switchd, foreign)
    with pytest.raises(errors.InvalidSpec) as caught:
        manager.apply(dp.parse(clash))
    assert caught.value.field == "ovs.bridges.2.name"
    assert f"bridge '{foreign}' exists and is not Meridian's" in str(caught.value)
    assert snapshot(switchd, foreign) == before
    assert switchd.vsctl("get", "Open_vSwitch", ".", "other_config:pmd-cpu-mask") == '"0x6"'
    assert manager.applied == dp.parse(profile_spec(tag))
    assert manager.events[-1].kind == "refused"


def test_port_clash_with_a_foreign_port_changes_nothing(
    switchd: ovs_support.Ovs, manager: dpm.Manager, foreign: str, tag: str
) -> None:
    spec = {"ovs": {"bridges": [{"name": f"mb{tag}", "ports": [{"name": f"fp{tag}"}]}]}}
    with pytest.raises(errors.InvalidSpec) as caught:
        manager.apply(dp.parse(spec))
    assert f"port 'fp{tag}' exists on bridge '{foreign}' (not Meridian's)" in str(caught.value)
    assert f"mb{tag}" not in switchd.vsctl("list-br").split()


@pytest.mark.netns
def test_two_vms_exchange_tcp_through_a_managed_netdev_bridge(
    switchd: ovs_support.Ovs, manager: dpm.Manager, tag: str
) -> None:
    vms = [
        vmnet.make_vm(f"meridian-vm{tag}-{i}", f"mv{tag}h{i}", f"10.231.7.{i}/24") for i in (1, 2)
    ]
    try:
        bridge = {"name": f"mb{tag}", "ports": [{"name": v.dev, "type": "system"} for v in vms]}
        manager.apply(dp.parse({"ovs": {"bridges": [bridge]}}))
        vms[0].exec("ping", "-c", "1", "-W", "5", vms[1].ip)
        bps = vmnet.iperf(vms[1], vms[0], seconds=1)
        assert bps > 1e6, f"{bps:.0f} bit/s through the userspace bridge"
    finally:
        for vm in vms:
            vm.remove()
