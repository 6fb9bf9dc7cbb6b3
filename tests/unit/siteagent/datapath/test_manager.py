"""Applying a profile's sysfs part on a laid-out host: order, idempotence, bad input, drift.

OVS is exercised against a real ovs-vswitchd in tests/integration/test_datapath_ovs.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.support import hosttree

from siteagent import errors
from siteagent.datapath import manager as dpm
from siteagent.datapath import profile as dp
from siteagent.hardware import writer

NUMVFS = f"sys/class/net/{hosttree.PF}/device/sriov_numvfs"
PAGES = "sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages"
GOOD: dict[str, Any] = {
    "hugepages": [{"node": 1, "page_size_kb": 2048, "count": 16}],
    "sriov": [{"pf": hosttree.PF, "vfs": 4, "physnet": "physnet1", "spoof_check": False}],
    "cpu": [{"node": 0, "pinned": "1-3", "shared": "0"}],
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return hosttree.lay_out(tmp_path / "host")


def make(tree: Path) -> tuple[dpm.Manager, hosttree.RecordingLinks]:
    links = hosttree.RecordingLinks()
    return dpm.Manager(writer.SysfsWriter(tree), None, links), links


def test_applied_in_order_then_idempotent(tree: Path) -> None:
    manager, links = make(tree)
    applied = manager.apply(dp.parse(GOOD))
    assert manager.sysfs.journal == [f"{PAGES}=16", f"{NUMVFS}=4"]  # pages before VFs
    assert links.calls == [(hosttree.PF, i, False, False) for i in range(4)]
    assert applied.changes[0].startswith("node1 2048 kB pages: 16")
    assert applied.notes == (
        "cpu.0.pinned: CPUs 1 are not isolated by the kernel; pinned instances share them"
        " with the host",
    )
    again = manager.apply(dp.parse(GOOD))
    assert again.changes == ()
    assert len(manager.sysfs.journal) == 2 and len(links.calls) == 4


def test_new_vf_count_goes_through_zero(tree: Path) -> None:
    manager, _ = make(tree)
    manager.apply(dp.parse(GOOD))
    spec = {**GOOD, "sriov": [{**GOOD["sriov"][0], "vfs": 8}]}
    manager.apply(dp.parse(spec))
    assert manager.sysfs.journal[-2:] == [f"{NUMVFS}=0", f"{NUMVFS}=8"]
    assert hosttree.numvfs(tree) == 8


def files(tree: Path) -> dict[str, str]:
    return {str(p): p.read_text() for p in sorted(tree.rglob("*")) if p.is_file()}


def bad(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


BAD = [
    (bad(sriov=[{"pf": "ens9f9", "vfs": 2}]), "sriov.0.pf", "unknown PF 'ens9f9'"),
    (bad(sriov=[{"pf": "eno1", "vfs": 2}]), "sriov.0.pf", "not SR-IOV capable"),
    (bad(sriov=[{"pf": hosttree.PF, "vfs": 17}]), "sriov.0.vfs", "at most 16"),
    (
        bad(hugepages=[{"node": 0, "page_size_kb": 1048576, "count": 5}]),
        "hugepages.0.count",
        "5120 MiB of huge pages asked on node 0, which has 4096 MiB",
    ),
    (bad(hugepages=[{"node": 2, "page_size_kb": 2048, "count": 1}]), "hugepages.0.node", "no NUMA"),
    (
        bad(hugepages=[{"node": 0, "page_size_kb": 4, "count": 1}]),
        "hugepages.0.page_size_kb",
        "no 4 kB pages",
    ),
    (bad(cpu=[{"node": 0, "pinned": "4-5"}]), "cpu.0.pinned", "CPUs 4-5 are not on node 0"),
    (bad(cpu=[{"node": 3}]), "cpu.0.node", "no NUMA node 3"),
]


@pytest.mark.parametrize(("spec", "field", "says"), BAD, ids=[f for _, f, _ in BAD])
def test_bad_input_changes_nothing(tree: Path, spec: dict[str, Any], field: str, says: str) -> None:
    manager, links = make(tree)
    manager.apply(dp.parse(GOOD))
    before = files(tree)
    journal, calls = list(manager.sysfs.journal), list(links.calls)
    with pytest.raises(errors.InvalidSpec) as caught:
        manager.apply(dp.parse(spec))
    assert caught.value.field == field
    assert says in str(caught.value) and "nothing was changed" in str(caught.value)
    assert manager.sysfs.journal == journal and links.calls == calls
    assert files(tree) == before
    assert hosttree.numvfs(tree) == 4 and hosttree.nr_hugepages(tree, 1, 2048) == 16
    assert manager.applied == dp.parse(GOOD)  # the previous state is kept
    assert manager.events[-1].kind == "refused"


def test_pmd_mask_outside_the_hosts_cpus_is_refused_without_a_switch_read(tree: Path) -> None:
    manager, _ = make(tree)
    spec = {"ovs": {"other_config": {"pmd-cpu-mask": "0x300"}}}  # CPUs 8-9 of 0-7
    with pytest.raises(errors.InvalidSpec) as caught:
        manager.apply(dp.parse(spec))
    assert caught.value.field == "ovs.other_config.pmd-cpu-mask"
    assert "CPUs 8-9 are not on any NUMA node" in str(caught.value)
    assert "manages no switch" in str(caught.value)


def test_vf_drift_corrected_by_policy(tree: Path) -> None:
    manager, _ = make(tree)
    manager.apply(dp.parse(GOOD))
    hosttree.write(tree, NUMVFS, "1\n")  # by hand
    assert manager.check_drift() == [f"{hosttree.PF}: 1 VFs, profile says 4"]
    assert hosttree.numvfs(tree) == 4
    assert [e.kind for e in manager.events][-3:] == ["drift", "applied", "corrected"]
    assert manager.drift() == []


def test_drift_only_reported_by_policy(tree: Path) -> None:
    manager, _ = make(tree)
    manager.apply(dp.parse({**GOOD, "policy": "report"}))
    hosttree.write(tree, PAGES, "3\n")
    assert manager.check_drift() == ["node1 2048 kB pages: 3, profile says 16"]
    assert hosttree.nr_hugepages(tree, 1, 2048) == 3
    assert manager.events[-1].kind == "drift"


def test_host_view_from_what_was_applied(tree: Path) -> None:
    manager, _ = make(tree)
    assert manager.host_view().traits == {}
    manager.apply(dp.parse(GOOD))
    view = manager.host_view()
    assert view.traits == {dpm.SRIOV: "true"}
    [pool] = view.sriov[1]
    assert (pool.physnet, pool.device, pool.vfs_total) == ("physnet1", hosttree.PF, 4)
    pages = {p.page_size_kb: p.total for p in view.hugepages[1]}
    assert pages == {2048: 16, 1048576: 0}
