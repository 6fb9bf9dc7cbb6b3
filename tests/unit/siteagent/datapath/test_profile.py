"""The data-path profile: what parses, and the first problem named by its dotted path."""

from __future__ import annotations

from typing import Any

import pytest

from siteagent import errors
from siteagent.datapath import profile as dp

FULL: dict[str, Any] = {
    "policy": "report",
    "hugepages": [{"node": 0, "page_size_kb": 2048, "count": 512}],
    "sriov": [{"pf": "ens1f0", "vfs": 8, "physnet": "physnet1", "trust": True}],
    "ovs": {
        "other_config": {"dpdk-init": "true", "dpdk-socket-mem": "1024,0", "pmd-cpu-mask": "0xc"},
        "bridges": [
            {
                "name": "br-dp",
                "datapath_type": "netdev",
                "ports": [
                    {"name": "vhu0", "type": "vhost-user", "path": "/run/vhu0.sock"},
                    {"name": "int0", "type": "internal"},
                    {"name": "to-ex", "type": "patch", "peer": "to-dp"},
                ],
                "flows": ["priority=0,actions=NORMAL"],
            },
            {"name": "br-ex", "ports": [{"name": "to-dp", "type": "patch", "peer": "to-ex"}]},
        ],
    },
    "cpu": [{"node": 0, "pinned": "2-3", "shared": "0-1"}],
}


def test_full_profile_round_trips() -> None:
    profile = dp.parse(FULL)
    assert profile.policy == "report"
    assert profile.pmd_cpus() == frozenset({2, 3})
    assert profile.bridge_names() == {"br-dp", "br-ex"}
    assert profile.port_names() == {"vhu0", "int0", "to-ex", "to-dp"}
    assert dp.parse(dp.to_spec(profile)) == profile


def test_empty_profile_is_valid_and_changes_nothing() -> None:
    profile = dp.parse({})
    assert profile == dp.Profile()
    assert profile.pmd_cpus() is None


def with_(path: str, value: Any) -> dict[str, Any]:
    spec: Any = dp.to_spec(dp.parse(FULL))
    *parents, leaf = path.split(".")
    node = spec
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if isinstance(node, list):
        node[int(leaf)] = value
    else:
        node[leaf] = value
    result: dict[str, Any] = spec
    return result


BAD = [
    (with_("policy", "ignore"), "policy"),
    (with_("hugepages.0.count", -1), "hugepages.0.count"),
    (with_("hugepages.0.page_size_kb", 0), "hugepages.0.page_size_kb"),
    ({"hugepages": [FULL["hugepages"][0], FULL["hugepages"][0]]}, "hugepages.1"),
    (with_("sriov.0.pf", "a/b"), "sriov.0.pf"),
    (with_("sriov.0.vfs", -2), "sriov.0.vfs"),
    (with_("ovs.other_config.pmd-cpu-mask", "0xz"), "ovs.other_config.pmd-cpu-mask"),
    (with_("ovs.other_config.pmd-cpu-mask", "0x0"), "ovs.other_config.pmd-cpu-mask"),
    (with_("ovs.other_config.dpdk-socket-mem", "lots"), "ovs.other_config.dpdk-socket-mem"),
    (with_("ovs.bridges.1.name", "br-dp"), "ovs.bridges.1"),
    (with_("ovs.bridges.0.name", "a-name-longer-than-15"), "ovs.bridges.0.name"),
    (with_("ovs.bridges.0.datapath_type", "dpdk"), "ovs.bridges.0.datapath_type"),
    (with_("ovs.bridges.0.ports.2.peer", ""), "ovs.bridges.0.ports.2.peer"),
    (with_("ovs.bridges.0.ports.0.path", "relative.sock"), "ovs.bridges.0.ports.0.path"),
    (with_("ovs.bridges.0.ports.1.name", "br-ex"), "ovs.bridges.0.ports.1.name"),
    (with_("ovs.bridges.0.flows.0", "   "), "ovs.bridges.0.flows.0"),
    (with_("cpu.0.pinned", "3-1"), "cpu.0.pinned"),
    (with_("cpu.0.shared", "1-2"), "cpu.0"),
    ({"unknown": 1}, "unknown"),
]


@pytest.mark.parametrize(("spec", "field"), BAD, ids=[f for _, f in BAD])
def test_bad_profile_names_its_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(errors.InvalidSpec) as caught:
        dp.parse(spec)
    assert caught.value.field == field
    assert caught.value.kind == dp.KIND
