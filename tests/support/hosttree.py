"""A laid-out sysfs tree of a data-path host (there is no SR-IOV NIC on test machines).

Two NUMA nodes of 4 CPUs (0-3, 4-7; 2-3 and 6-7 isolated), 4 GiB each with 2 MiB and
1 GiB page pools; an SR-IOV PF ``ens1f0`` (Intel 0x8086:0x158b, i40e, link up, 16 VFs at
most) on node 1 at PCI 0000:3b:00.0; a plain NIC ``eno1`` without SR-IOV.
"""

from __future__ import annotations

from pathlib import Path

GIB_KB = 1024 * 1024
PF = "ens1f0"
PF_PCI = "0000:3b:00.0"
PF_TOTALVFS = 16


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def lay_out(root: Path) -> Path:
    write(root, "sys/devices/system/cpu/online", "0-7\n")
    write(root, "sys/devices/system/cpu/isolated", "2-3,6-7\n")
    for node, cpus in ((0, "0-3"), (1, "4-7")):
        base = f"sys/devices/system/node/node{node}"
        write(root, f"{base}/cpulist", f"{cpus}\n")
        write(
            root,
            f"{base}/meminfo",
            f"Node {node} MemTotal: {4 * GIB_KB} kB\nNode {node} MemFree: {3 * GIB_KB} kB\n",
        )
        for size in (2048, 1048576):
            write(root, f"{base}/hugepages/hugepages-{size}kB/nr_hugepages", "0\n")
            write(root, f"{base}/hugepages/hugepages-{size}kB/free_hugepages", "0\n")
    device = root / "sys/devices/pci0000:3a" / PF_PCI
    write(root, f"sys/devices/pci0000:3a/{PF_PCI}/sriov_totalvfs", f"{PF_TOTALVFS}\n")
    write(root, f"sys/devices/pci0000:3a/{PF_PCI}/sriov_numvfs", "0\n")
    write(root, f"sys/devices/pci0000:3a/{PF_PCI}/numa_node", "1\n")
    write(root, f"sys/devices/pci0000:3a/{PF_PCI}/vendor", "0x8086\n")
    write(root, f"sys/devices/pci0000:3a/{PF_PCI}/device", "0x158b\n")
    drivers = root / "sys/bus/pci/drivers/i40e"
    drivers.mkdir(parents=True, exist_ok=True)
    (device / "driver").symlink_to(drivers)
    net = root / "sys/class/net" / PF
    net.mkdir(parents=True, exist_ok=True)
    (net / "device").symlink_to(device)
    write(root, f"sys/class/net/{PF}/operstate", "up\n")
    write(root, "sys/class/net/eno1/device/numa_node", "0\n")
    write(root, "sys/class/net/eno1/operstate", "up\n")
    write(root, "proc/meminfo", f"MemTotal: {8 * GIB_KB} kB\nMemFree: {6 * GIB_KB} kB\n")
    return root


def read(root: Path, relative: str) -> str:
    return (root / relative).read_text().strip()


def numvfs(root: Path) -> int:
    return int(read(root, f"sys/class/net/{PF}/device/sriov_numvfs"))


def nr_hugepages(root: Path, node: int, size_kb: int) -> int:
    base = f"sys/devices/system/node/node{node}/hugepages/hugepages-{size_kb}kB"
    return int(read(root, f"{base}/nr_hugepages"))


class RecordingLinks:
    """VF link attributes written down (a seam of ours: no SR-IOV NIC to set them on)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bool, bool]] = []

    def set(self, pf: str, vf: int, *, trust: bool, spoof_check: bool) -> None:
        self.calls.append((pf, vf, trust, spoof_check))
