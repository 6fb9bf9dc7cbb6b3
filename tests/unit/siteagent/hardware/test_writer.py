"""The sysfs writer on a laid-out tree: huge pages, VF counts through 0, PF details."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support import hosttree

from siteagent import errors
from siteagent.hardware import writer


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return hosttree.lay_out(tmp_path)


def test_facts_nodes_cpus_memory_and_page_sizes(tree: Path) -> None:
    facts = writer.SysfsWriter(tree).facts()
    assert sorted(facts.nodes) == [0, 1]
    assert facts.nodes[1].cpus == frozenset({4, 5, 6, 7})
    assert facts.nodes[0].memory_kb == 4 * hosttree.GIB_KB
    assert sorted(facts.nodes[0].hugepages) == [2048, 1048576]
    assert facts.isolated == frozenset({2, 3, 6, 7})
    assert facts.cpus == frozenset(range(8))


def test_pf_details(tree: Path) -> None:
    pf = writer.SysfsWriter(tree).pf(hosttree.PF)
    assert pf == writer.PfFacts(
        name=hosttree.PF,
        pci_address=hosttree.PF_PCI,
        vendor="0x8086",
        device="0x158b",
        driver="i40e",
        link="up",
        totalvfs=16,
        numvfs=0,
        numa_node=1,
    )
    assert writer.SysfsWriter(tree).pf("eno1").totalvfs is None  # type: ignore[union-attr]
    assert writer.SysfsWriter(tree).pf("nope0") is None


def test_vf_count_goes_through_zero_and_unchanged_is_not_written(tree: Path) -> None:
    w = writer.SysfsWriter(tree)
    assert w.set_vfs(hosttree.PF, 4)
    assert w.set_vfs(hosttree.PF, 8)
    assert not w.set_vfs(hosttree.PF, 8)
    assert w.set_vfs(hosttree.PF, 0)
    numvfs = f"sys/class/net/{hosttree.PF}/device/sriov_numvfs"
    assert w.journal == [f"{numvfs}=4", f"{numvfs}=0", f"{numvfs}=8", f"{numvfs}=0"]
    assert hosttree.numvfs(tree) == 0


def test_hugepages_written_and_read_back(tree: Path) -> None:
    w = writer.SysfsWriter(tree)
    assert w.set_hugepages(1, 2048, 64) == 64
    assert w.set_hugepages(1, 2048, 64) == 64
    assert len(w.journal) == 1
    assert hosttree.nr_hugepages(tree, 1, 2048) == 64
    assert w.hugepages(1, 2048) == writer.PagePool(total=64, free=0)


def test_host_without_numa_nodes_uses_the_global_pools(tmp_path: Path) -> None:
    hosttree.write(tmp_path, "sys/devices/system/cpu/online", "0-1\n")
    hosttree.write(tmp_path, "proc/meminfo", "MemTotal: 2097152 kB\nMemFree: 1048576 kB\n")
    hosttree.write(tmp_path, "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "0\n")
    w = writer.SysfsWriter(tmp_path)
    assert w.facts().nodes[0].cpus == frozenset({0, 1})
    assert w.set_hugepages(0, 2048, 3) == 3
    assert w.journal == ["sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages=3"]


def test_unwritable_file_is_a_hardware_error_naming_it(tree: Path) -> None:
    path = tree / f"sys/class/net/{hosttree.PF}/device/sriov_numvfs"
    path.unlink()
    path.mkdir()  # writing a directory fails, even as root
    with pytest.raises(errors.HardwareError) as caught:
        writer.SysfsWriter(tree).set_vfs(hosttree.PF, 2)
    assert "sriov_numvfs" in str(caught.value)
