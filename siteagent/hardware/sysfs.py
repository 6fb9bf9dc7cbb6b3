"""Discover the local host's NUMA cells, CPUs, huge pages and SR-IOV pools from sysfs.

Everything is read below ``root`` (``/`` on a real host, a fixture tree in tests):

- NUMA cells from ``sys/devices/system/node/node<N>/cpulist`` and ``meminfo``; a host
  without ``sys/devices/system/node`` is one cell 0 with every CPU of
  ``sys/devices/system/cpu/online`` and the memory of ``proc/meminfo``;
- dedicated CPUs (the ones instances are pinned to) from ``sys/devices/system/cpu/isolated``
  unless the configuration names them, like Nova's ``cpu_dedicated_set``;
- huge pages per cell from ``node<N>/hugepages/hugepages-<size>kB/{nr,free}_hugepages``,
  or from ``sys/kernel/mm/hugepages`` on a host without NUMA;
- SR-IOV pools from ``sys/class/net/<if>/device/{sriov_totalvfs,sriov_numvfs,numa_node}``
  for the interfaces the configuration maps to a physical network (like Nova's
  ``passthrough_whitelist``); other interfaces are not offered to instances.

Discovery reports capacity. ``memory_used_mb`` is what the kernel does not count as
free; CPU and VF claims by instances are the driver's business and reported as 0 here.
Unreadable or malformed files raise ``HardwareError`` naming the path.
"""

from __future__ import annotations

import dataclasses
import re
import socket
from collections.abc import Mapping
from pathlib import Path

from siteagent import errors, models
from siteagent.hardware import cpulist

_NODE_DIR = re.compile(r"node(\d+)")
_HUGEPAGE_DIR = re.compile(r"hugepages-(\d+)kB")


def discover_host(
    root: str | Path = "/",
    *,
    name: str | None = None,
    physnets: Mapping[str, str] | None = None,
    dedicated: frozenset[int] | None = None,
    traits: Mapping[str, str] | None = None,
) -> models.Host:
    """The host below ``root``: its cells with CPUs, memory, huge pages and VF pools.

    ``physnets`` maps interface names to physical networks; ``dedicated`` overrides the
    kernel's isolated CPUs as the set instances may be pinned to.
    """
    base = Path(root)
    online = _read_cpulist(base / "sys/devices/system/cpu/online", required=False)
    if dedicated is None:
        dedicated = _read_cpulist(base / "sys/devices/system/cpu/isolated", required=False)
    found = _numa_cells(base, online) or [_single_cell(base, online)]
    cells = {
        cell.id: dataclasses.replace(cell, pcpus_total=len(cpus & dedicated))
        for cell, cpus in found
    }
    pools = _sriov_pools(base, physnets or {}, cells=sorted(cells))
    for cell_id, cell_pools in pools.items():
        cells[cell_id] = dataclasses.replace(cells[cell_id], sriov=tuple(cell_pools))
    return models.Host(
        name=name if name is not None else socket.gethostname(),
        cells=tuple(cells[i] for i in sorted(cells)),
        traits=dict(traits or {}),
    )


_Found = tuple[models.NumaCell, frozenset[int]]


def _numa_cells(base: Path, online: frozenset[int]) -> list[_Found]:
    node_root = base / "sys/devices/system/node"
    if not node_root.is_dir():
        return []
    cells = []
    for entry in sorted(node_root.iterdir()):
        match = _NODE_DIR.fullmatch(entry.name)
        if match is None or not entry.is_dir():
            continue
        cpus = _read_cpulist(entry / "cpulist", required=True)
        if online:
            cpus = cpus & online
        total_kb, free_kb = _meminfo(entry / "meminfo")
        cell = (
            models.NumaCell(
                id=int(match.group(1)),
                cpus_total=len(cpus),
                pcpus_total=0,
                memory_mb=total_kb // 1024,
                memory_used_mb=(total_kb - free_kb) // 1024,
                hugepages=_hugepages(entry / "hugepages"),
            ),
            cpus,
        )
        cells.append(cell)
    return cells


def _single_cell(base: Path, online: frozenset[int]) -> _Found:
    if not online:
        raise errors.HardwareError(
            "no NUMA nodes and no online CPUs", path=str(base / "sys/devices/system/cpu/online")
        )
    total_kb, free_kb = _meminfo(base / "proc/meminfo")
    cell = models.NumaCell(
        id=0,
        cpus_total=len(online),
        pcpus_total=0,
        memory_mb=total_kb // 1024,
        memory_used_mb=(total_kb - free_kb) // 1024,
        hugepages=_hugepages(base / "sys/kernel/mm/hugepages"),
    )
    return cell, online


def _sriov_pools(
    base: Path, physnets: Mapping[str, str], *, cells: list[int]
) -> dict[int, list[models.SriovPool]]:
    """The VF pools of the mapped interfaces, by the NUMA cell their device sits on."""
    pools: dict[int, list[models.SriovPool]] = {}
    for interface, physnet in sorted(physnets.items()):
        device = base / "sys/class/net" / interface / "device"
        if not (base / "sys/class/net" / interface).exists():
            raise errors.HardwareError(
                f"interface {interface!r} mapped to physnet {physnet!r} does not exist",
                path=str(base / "sys/class/net" / interface),
            )
        total = _read_int(device / "sriov_totalvfs", required=False)
        if total is None:
            raise errors.HardwareError(
                f"interface {interface!r} mapped to physnet {physnet!r} is not SR-IOV capable",
                path=str(device / "sriov_totalvfs"),
            )
        enabled = _read_int(device / "sriov_numvfs", required=False) or 0
        node = _read_int(device / "numa_node", required=False)
        # -1 (or no file): the device has no NUMA affinity; account it to the first cell
        cell = cells[0] if node is None or node < 0 else node
        if cell not in cells:
            raise errors.HardwareError(
                f"device of {interface!r} is on NUMA node {node}, which has no cell",
                path=str(device / "numa_node"),
            )
        pool = models.SriovPool(physnet=physnet, device=interface, vfs_total=enabled)
        pools.setdefault(cell, []).append(pool)
    return pools


def _read_cpulist(path: Path, *, required: bool) -> frozenset[int]:
    text = _read(path, required=required)
    if text is None:
        return frozenset()
    try:
        return cpulist.parse(text)
    except ValueError as exc:
        raise errors.HardwareError(str(exc), path=str(path)) from exc


def _read(path: Path, *, required: bool) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError as exc:
        if required:
            raise errors.HardwareError("missing", path=str(path)) from exc
        return None
    except OSError as exc:
        raise errors.HardwareError(f"unreadable: {exc.strerror}", path=str(path)) from exc


def _read_int(path: Path, *, required: bool = True) -> int | None:
    text = _read(path, required=required)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise errors.HardwareError(f"not an integer: {text.strip()!r}", path=str(path)) from None


def _meminfo(path: Path) -> tuple[int, int]:
    """(MemTotal, MemFree) in kB from a meminfo file, global or per node."""
    text = _read(path, required=True) or ""
    found: dict[str, int] = {}
    for line in text.splitlines():
        label, sep, value = line.partition(":")
        if not sep or not label.split():
            continue
        key = label.split()[-1]
        if key in ("MemTotal", "MemFree"):
            try:
                found[key] = int(value.split()[0])
            except (IndexError, ValueError):
                raise errors.HardwareError(f"bad {key} line {line!r}", path=str(path)) from None
    if "MemTotal" not in found or "MemFree" not in found:
        raise errors.HardwareError("no MemTotal/MemFree", path=str(path))
    return found["MemTotal"], found["MemFree"]


def _hugepages(directory: Path) -> tuple[models.HugePages, ...]:
    if not directory.is_dir():
        return ()
    pools = []
    for entry in directory.iterdir():
        match = _HUGEPAGE_DIR.fullmatch(entry.name)
        if match is None:
            continue
        total = _read_int(entry / "nr_hugepages") or 0
        free = _read_int(entry / "free_hugepages") or 0
        pools.append(models.HugePages(page_size_kb=int(match.group(1)), total=total, free=free))
    return tuple(sorted(pools, key=lambda p: p.page_size_kb))


# -- for the writers (``writer.py``), which read what they change with the same rules ------

read_int = _read_int
read_cpulist = _read_cpulist
meminfo = _meminfo
NODE_DIR = _NODE_DIR
HUGEPAGE_DIR = _HUGEPAGE_DIR
