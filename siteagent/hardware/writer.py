"""Change the host's huge pages and SR-IOV VF counts through sysfs; read what they rest on.

Everything lives below a configurable ``root`` (``/`` on a real host, a laid-out tree in
tests), like discovery in ``sysfs.py``:

- huge pages: ``sys/devices/system/node/node<N>/hugepages/hugepages-<size>kB/nr_hugepages``
  (``sys/kernel/mm/hugepages/...`` on a host without NUMA nodes); the kernel may grant
  fewer pages than asked (fragmented memory), so every write is read back;
- VFs: ``sys/class/net/<pf>/device/sriov_numvfs``. The kernel refuses to go from one
  non-zero count to another, so a change goes through 0 first; an unchanged count is not
  written at all (re-creating VFs would cut the instances using them);
- VF trust and spoof-check are link attributes, not sysfs files: ``VfLinks`` sets them
  (``IpLink`` through iproute2 on a real host).

``HostFacts`` is what the writers' checks need: NUMA nodes with their CPUs, memory and
huge page pools, the kernel's isolated CPUs, and PF details (PCI address, vendor/device
id, driver, link state, ``sriov_totalvfs``). ``journal`` records every write, in order.
Failures raise ``HardwareError`` naming the path.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from siteagent import errors
from siteagent.hardware import sysfs


@dataclass(frozen=True, slots=True)
class PagePool:
    total: int
    free: int


@dataclass(frozen=True, slots=True)
class NodeFacts:
    id: int
    cpus: frozenset[int]
    memory_kb: int
    hugepages: dict[int, PagePool] = field(default_factory=dict)
    """By page size in kB: the sizes this node supports."""


@dataclass(frozen=True, slots=True)
class PfFacts:
    """One network interface as an SR-IOV physical function."""

    name: str
    pci_address: str
    vendor: str
    device: str
    driver: str
    link: str
    """The kernel's ``operstate``: ``up``, ``down``, ``unknown``, ..."""
    totalvfs: int | None
    """None: the device is not SR-IOV capable."""
    numvfs: int
    numa_node: int


@dataclass(frozen=True, slots=True)
class HostFacts:
    nodes: dict[int, NodeFacts]
    isolated: frozenset[int]

    @property
    def cpus(self) -> frozenset[int]:
        return frozenset().union(*(n.cpus for n in self.nodes.values()))


class VfLinks(Protocol):
    """Sets a VF's link attributes (trust, spoof-check) through its PF."""

    def set(self, pf: str, vf: int, *, trust: bool, spoof_check: bool) -> None: ...


class IpLink:
    """``ip link set dev <pf> vf <n> trust on|off spoofchk on|off`` (iproute2)."""

    def set(self, pf: str, vf: int, *, trust: bool, spoof_check: bool) -> None:
        onoff = {True: "on", False: "off"}
        argv = ["ip", "link", "set", "dev", pf, "vf", str(vf)]
        argv += ["trust", onoff[trust], "spoofchk", onoff[spoof_check]]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise errors.HardwareError(f"{' '.join(argv)}: {exc}") from exc
        if done.returncode != 0:
            raise errors.HardwareError(f"{' '.join(argv)}: {done.stderr.strip()}")


class SysfsWriter:
    """Reads and writes the host's data-path sysfs below ``root``."""

    def __init__(self, root: str | Path = "/") -> None:
        self.root = Path(root)
        self.journal: list[str] = []
        """Every write, ``<relative path>=<value>``, in the order made."""

    # -- reading -----------------------------------------------------------------------

    def facts(self) -> HostFacts:
        base = self.root
        online = sysfs.read_cpulist(base / "sys/devices/system/cpu/online", required=False)
        isolated = sysfs.read_cpulist(base / "sys/devices/system/cpu/isolated", required=False)
        nodes: dict[int, NodeFacts] = {}
        node_root = base / "sys/devices/system/node"
        if node_root.is_dir():
            for entry in sorted(node_root.iterdir()):
                match = sysfs.NODE_DIR.fullmatch(entry.name)
                if match is None or not entry.is_dir():
                    continue
                cpus = sysfs.read_cpulist(entry / "cpulist", required=True)
                total_kb, _ = sysfs.meminfo(entry / "meminfo")
                node = int(match.group(1))
                nodes[node] = NodeFacts(
                    node, cpus & online if online else cpus, total_kb, self._pools(node)
                )
        if not nodes:
            total_kb, _ = sysfs.meminfo(base / "proc/meminfo")
            nodes[0] = NodeFacts(0, online, total_kb, self._pools(0))
        return HostFacts(nodes=nodes, isolated=isolated)

    def pf(self, name: str) -> PfFacts | None:
        """The interface ``name``, or None when there is no such interface."""
        net = self.root / "sys/class/net" / name
        if not net.exists():
            return None
        device = net / "device"
        numvfs = sysfs.read_int(device / "sriov_numvfs", required=False)
        node = sysfs.read_int(device / "numa_node", required=False)
        return PfFacts(
            name=name,
            pci_address=device.resolve().name if device.exists() else "",
            vendor=self._text(device / "vendor"),
            device=self._text(device / "device"),
            driver=(device / "driver").resolve().name if (device / "driver").exists() else "",
            link=self._text(net / "operstate") or "unknown",
            totalvfs=sysfs.read_int(device / "sriov_totalvfs", required=False),
            numvfs=numvfs or 0,
            numa_node=node if node is not None and node >= 0 else 0,
        )

    def hugepages(self, node: int, size_kb: int) -> PagePool | None:
        return self._pools(node).get(size_kb)

    # -- writing -----------------------------------------------------------------------

    def set_hugepages(self, node: int, size_kb: int, count: int) -> int:
        """Ask for ``count`` pages; returns what the kernel granted (read back)."""
        path = self._pool_dir(node) / f"hugepages-{size_kb}kB" / "nr_hugepages"
        if sysfs.read_int(path) == count:
            return count
        self._write(path, count)
        return sysfs.read_int(path) or 0

    def set_vfs(self, pf: str, count: int) -> bool:
        """Make ``pf`` have ``count`` VFs, through 0; returns whether anything changed."""
        path = self.root / "sys/class/net" / pf / "device" / "sriov_numvfs"
        current = sysfs.read_int(path) or 0
        if current == count:
            return False
        if current and count:
            self._write(path, 0)
        self._write(path, count)
        got = sysfs.read_int(path)
        if got != count:
            raise errors.HardwareError(
                f"asked for {count} VFs, the device has {got}", path=str(path)
            )
        return True

    # -- helpers -----------------------------------------------------------------------

    def _pool_dir(self, node: int) -> Path:
        per_node = self.root / f"sys/devices/system/node/node{node}/hugepages"
        if per_node.is_dir() or (self.root / "sys/devices/system/node").is_dir():
            return per_node
        return self.root / "sys/kernel/mm/hugepages"

    def _pools(self, node: int) -> dict[int, PagePool]:
        directory = self._pool_dir(node)
        if not directory.is_dir():
            return {}
        pools = {}
        for entry in directory.iterdir():
            match = sysfs.HUGEPAGE_DIR.fullmatch(entry.name)
            if match is not None:
                total = sysfs.read_int(entry / "nr_hugepages") or 0
                free = sysfs.read_int(entry / "free_hugepages", required=False) or 0
                pools[int(match.group(1))] = PagePool(total, free)
        return pools

    def _write(self, path: Path, value: int) -> None:
        try:
            path.write_text(f"{value}\n")
        except OSError as exc:
            raise errors.HardwareError(
                f"cannot write {value}: {exc.strerror}", path=str(path)
            ) from exc
        self.journal.append(f"{path.relative_to(self.root)}={value}")

    @staticmethod
    def _text(path: Path) -> str:
        try:
            return path.read_text().strip()
        except OSError:
            return ""
