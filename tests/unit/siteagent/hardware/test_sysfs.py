"""Hardware discovery against a fixture sysfs tree with known answers, and this machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from siteagent import errors, models
from siteagent.hardware import cpulist, sysfs

GIB_KB = 1024 * 1024


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def node_meminfo(node: int, total_kb: int, free_kb: int) -> str:
    return (
        f"Node {node} MemTotal:       {total_kb} kB\n"
        f"Node {node} MemFree:        {free_kb} kB\n"
        f"Node {node} MemUsed:        {total_kb - free_kb} kB\n"
        f"Node {node} HugePages_Total:     0\n"
    )


def hugepages(root: Path, base: str, size_kb: int, total: int, free: int) -> None:
    write(root, f"{base}/hugepages-{size_kb}kB/nr_hugepages", f"{total}\n")
    write(root, f"{base}/hugepages-{size_kb}kB/free_hugepages", f"{free}\n")


@pytest.fixture
def two_node_host(tmp_path: Path) -> Path:
    """2 NUMA nodes of 8 CPUs; 2-7 and 10-15 isolated; 2M and 1G pages; one SR-IOV NIC
    (8 of 64 VFs enabled) on node 1 and a plain NIC."""
    write(tmp_path, "sys/devices/system/cpu/online", "0-15\n")
    write(tmp_path, "sys/devices/system/cpu/isolated", "2-7,10-15\n")
    node = "sys/devices/system/node"
    write(tmp_path, f"{node}/online", "0-1\n")
    write(tmp_path, f"{node}/possible", "0-1\n")
    write(tmp_path, f"{node}/node0/cpulist", "0-7\n")
    write(tmp_path, f"{node}/node0/meminfo", node_meminfo(0, 64 * GIB_KB, 60 * GIB_KB))
    hugepages(tmp_path, f"{node}/node0/hugepages", 2048, 1024, 1000)
    hugepages(tmp_path, f"{node}/node0/hugepages", 1048576, 16, 16)
    write(tmp_path, f"{node}/node1/cpulist", "8-15\n")
    write(tmp_path, f"{node}/node1/meminfo", node_meminfo(1, 32 * GIB_KB, 31 * GIB_KB))
    hugepages(tmp_path, f"{node}/node1/hugepages", 2048, 512, 512)
    hugepages(tmp_path, f"{node}/node1/hugepages", 1048576, 8, 4)
    hugepages(tmp_path, "sys/kernel/mm/hugepages", 2048, 1536, 1512)
    hugepages(tmp_path, "sys/kernel/mm/hugepages", 1048576, 24, 20)
    write(tmp_path, "sys/class/net/ens1f0/device/sriov_totalvfs", "64\n")
    write(tmp_path, "sys/class/net/ens1f0/device/sriov_numvfs", "8\n")
    write(tmp_path, "sys/class/net/ens1f0/device/numa_node", "1\n")
    write(tmp_path, "sys/class/net/eno1/device/numa_node", "0\n")
    write(tmp_path, "sys/class/net/lo/address", "00:00:00:00:00:00\n")
    write(tmp_path, "proc/meminfo", "MemTotal: 100663296 kB\nMemFree: 95000000 kB\n")
    return tmp_path


def test_two_nodes_with_isolated_cpus_pages_and_one_vf_nic(two_node_host: Path) -> None:
    host = sysfs.discover_host(
        two_node_host, name="cmp-1", physnets={"ens1f0": "physnet1"}, traits={"rack": "r1"}
    )
    assert host == models.Host(
        name="cmp-1",
        traits={"rack": "r1"},
        cells=(
            models.NumaCell(
                id=0,
                cpus_total=8,
                pcpus_total=6,
                memory_mb=65536,
                memory_used_mb=4096,
                hugepages=(
                    models.HugePages(page_size_kb=2048, total=1024, free=1000),
                    models.HugePages(page_size_kb=1048576, total=16, free=16),
                ),
            ),
            models.NumaCell(
                id=1,
                cpus_total=8,
                pcpus_total=6,
                memory_mb=32768,
                memory_used_mb=1024,
                hugepages=(
                    models.HugePages(page_size_kb=2048, total=512, free=512),
                    models.HugePages(page_size_kb=1048576, total=8, free=4),
                ),
                sriov=(models.SriovPool(physnet="physnet1", device="ens1f0", vfs_total=8),),
            ),
        ),
    )


def test_unmapped_nics_are_not_offered(two_node_host: Path) -> None:
    host = sysfs.discover_host(two_node_host, name="cmp-1")
    assert all(cell.sriov == () for cell in host.cells)


def test_configured_dedicated_set_overrides_isolated(two_node_host: Path) -> None:
    host = sysfs.discover_host(two_node_host, name="h", dedicated=cpulist.parse("4-7,8"))
    assert [cell.pcpus_total for cell in host.cells] == [4, 1]


def test_offline_cpus_are_not_counted(two_node_host: Path) -> None:
    write(two_node_host, "sys/devices/system/cpu/online", "0-11\n")
    host = sysfs.discover_host(two_node_host, name="h")
    assert [(c.cpus_total, c.pcpus_total) for c in host.cells] == [(8, 6), (4, 2)]


def test_device_without_numa_affinity_goes_to_the_first_cell(two_node_host: Path) -> None:
    write(two_node_host, "sys/class/net/ens1f0/device/numa_node", "-1\n")
    host = sysfs.discover_host(two_node_host, name="h", physnets={"ens1f0": "physnet1"})
    assert [len(cell.sriov) for cell in host.cells] == [1, 0]


@pytest.mark.parametrize(
    ("physnets", "problem"),
    [
        ({"ens9": "physnet1"}, "'ens9' mapped to physnet 'physnet1' does not exist"),
        ({"eno1": "physnet1"}, "'eno1' mapped to physnet 'physnet1' is not SR-IOV capable"),
    ],
)
def test_physnet_mapping_naming_a_bad_interface_fails(
    two_node_host: Path, physnets: dict[str, str], problem: str
) -> None:
    with pytest.raises(errors.HardwareError, match=problem):
        sysfs.discover_host(two_node_host, name="h", physnets=physnets)


@pytest.mark.parametrize(
    ("relative", "text", "problem"),
    [
        ("sys/devices/system/node/node1/cpulist", "8-x\n", "bad cpulist part '8-x'"),
        ("sys/devices/system/node/node0/meminfo", "Node 0 MemFree: 1 kB\n", "no MemTotal"),
        (
            "sys/devices/system/node/node0/hugepages/hugepages-2048kB/free_hugepages",
            "lots\n",
            "not an integer: 'lots'",
        ),
    ],
)
def test_malformed_files_name_their_path(
    two_node_host: Path, relative: str, text: str, problem: str
) -> None:
    write(two_node_host, relative, text)
    with pytest.raises(errors.HardwareError, match=problem) as caught:
        sysfs.discover_host(two_node_host, name="h")
    assert caught.value.path == str(two_node_host / relative)


def test_missing_node_cpulist_is_an_error(two_node_host: Path) -> None:
    (two_node_host / "sys/devices/system/node/node1/cpulist").unlink()
    with pytest.raises(errors.HardwareError, match="node1/cpulist: missing"):
        sysfs.discover_host(two_node_host, name="h")


def test_without_numa_one_cell_holds_everything(tmp_path: Path) -> None:
    write(tmp_path, "sys/devices/system/cpu/online", "0-3\n")
    write(tmp_path, "sys/devices/system/cpu/isolated", "2-3\n")
    write(tmp_path, "proc/meminfo", "MemTotal:  8388608 kB\nMemFree:  4194304 kB\nBuffers: 1 kB\n")
    hugepages(tmp_path, "sys/kernel/mm/hugepages", 2048, 64, 60)
    write(tmp_path, "sys/class/net/ens2/device/sriov_totalvfs", "4\n")
    write(tmp_path, "sys/class/net/ens2/device/sriov_numvfs", "4\n")
    host = sysfs.discover_host(tmp_path, name="edge", physnets={"ens2": "access"})
    assert host.cells == (
        models.NumaCell(
            id=0,
            cpus_total=4,
            pcpus_total=2,
            memory_mb=8192,
            memory_used_mb=4096,
            hugepages=(models.HugePages(page_size_kb=2048, total=64, free=60),),
            sriov=(models.SriovPool(physnet="access", device="ens2", vfs_total=4),),
        ),
    )


def test_nothing_to_read_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(errors.HardwareError, match="no NUMA nodes and no online CPUs"):
        sysfs.discover_host(tmp_path)


def test_this_machine() -> None:
    """Whatever Linux this runs on: at least one cell, every online CPU, some memory."""
    host = sysfs.discover_host("/")
    online = Path("/sys/devices/system/cpu/online")
    expected = {os.cpu_count()}
    if online.exists():
        expected.add(len(cpulist.parse(online.read_text())))
    assert host.name
    assert len(host.cells) >= 1
    assert sum(cell.cpus_total for cell in host.cells) in expected
    assert sum(cell.memory_mb for cell in host.cells) > 0
    for cell in host.cells:
        assert 0 <= cell.pcpus_total <= cell.cpus_total
        assert 0 <= cell.memory_used_mb <= cell.memory_mb
        assert all(0 <= pages.free <= pages.total for pages in cell.hugepages)
