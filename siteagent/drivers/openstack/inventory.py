"""Inventory and usage of an OpenStack site, read from Placement's provider trees and Nova.

A host is a provider tree with CPUs anywhere in it (VCPU or PCPU on the root, or only on
nested NUMA providers: a root without CPUs is not skipped). Trees without CPUs (sharing
disk pools, network-only providers) are not hosts. Within a host:

- **NUMA cells** are the providers carrying ``HW_NUMA_ROOT`` (os-traits' mark of a NUMA
  node provider), numbered by the ``NUMA<n>`` at the end of their name, else in name
  order. Each provider below a cell counts in that cell. *Fallback*, when the tree has no
  such provider (Nova's own trees today): the whole host is one cell 0, and the number
  of cells the hypervisor's ``cpu_info`` shows, where it shows one, is reported as the
  label ``hypervisor_numa_cells`` (Nova's API has no per-cell amounts or usage to split
  by). Amounts outside every cell (on the root, or on a nested provider that is no cell's)
  count in the lowest cell: Placement does not say which node they are local to.
- **CPUs**: PCPU is dedicated, VCPU shared; ``cpus_total`` is both together at a ratio
  of 1 and ``cpu_allocation_ratio`` is the VCPU inventory's (the smallest where providers
  differ), so the broker computes the shared capacity as Placement does.
- **Memory**: MEMORY_MB at Placement's capacity, ``(total - reserved) * ratio``.
- **Huge pages**: ``CUSTOM_HUGEPAGES_<n><K|M|G>`` classes (counted in pages), and
  MEMORY_MB of a provider nested in a cell with a ``CUSTOM_MEMORY_PAGE_SIZE_<KiB>``
  trait (the NUMA-in-Placement convention; counted in MiB, reported in pages).
- **SR-IOV pools**: providers with SRIOV_NET_VF (Nova's PCI and Neutron's NIC providers),
  their physical network from a ``CUSTOM_PHYSNET_<NAME>`` trait.

The root's traits, DISK_GB and the hypervisor's state go into the host's ``traits``.
``reserved`` is the host's own and never offered. The functions block: the driver runs
them in a worker thread.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from siteagent import models
from siteagent.drivers.base import HOST_STATE
from siteagent.drivers.openstack import placement
from siteagent.drivers.openstack.placement import Amount, Hypervisor, Provider

NUMA_ROOT = "HW_NUMA_ROOT"
_CELL_NUMBER = re.compile(r"NUMA_?(\d+)$", re.IGNORECASE)
_HUGEPAGES = re.compile(r"CUSTOM_HUGEPAGES_(\d+)([KMG])B?")
_PAGE_SIZE_TRAIT = re.compile(r"CUSTOM_MEMORY_PAGE_SIZE_(\d+)")
_UNIT_KB = {"K": 1, "M": 1024, "G": 1024 * 1024}
_PHYSNET = "CUSTOM_PHYSNET_"
_CPU = ("VCPU", "PCPU")


@dataclass(slots=True)
class _Cell:
    """What one cell's providers add up to."""

    id: int
    vcpus: int = 0
    pcpus: int = 0
    vcpus_used: int = 0
    pcpus_used: int = 0
    memory_mb: int = 0
    memory_used_mb: int = 0
    pages: dict[int, list[int]] = field(default_factory=dict)
    """Page size in KiB → [total, free]."""
    sriov: list[models.SriovPool] = field(default_factory=list)

    def add(self, p: Provider, in_cell: bool) -> None:
        a = p.amounts
        for rc, amount in a.items():
            if rc == "VCPU":
                self.vcpus += amount.usable
                self.vcpus_used += amount.used
            elif rc == "PCPU":
                self.pcpus += amount.usable
                self.pcpus_used += amount.used
            elif rc == "MEMORY_MB":
                size = _page_size(p.traits) if in_cell else None
                if size is None:
                    self.memory_mb += amount.capacity
                    self.memory_used_mb += amount.used
                else:
                    self._pages(size, amount.usable * 1024 // size, amount.used * 1024 // size)
            elif rc == "SRIOV_NET_VF":
                self.sriov.append(
                    models.SriovPool(_physnet(p.traits), p.name, amount.usable, amount.used)
                )
            elif (match := _HUGEPAGES.fullmatch(rc)) is not None:
                size = int(match.group(1)) * _UNIT_KB[match.group(2)]
                self._pages(size, amount.usable, amount.used)

    def _pages(self, size_kb: int, total: int, used: int) -> None:
        pool = self.pages.setdefault(size_kb, [0, 0])
        pool[0] += total
        pool[1] += total - used

    def model(self) -> models.NumaCell:
        return models.NumaCell(
            id=self.id,
            cpus_total=self.vcpus + self.pcpus,
            pcpus_total=self.pcpus,
            memory_mb=self.memory_mb,
            pcpus_used=self.pcpus_used,
            vcpus_used=self.vcpus_used,
            memory_used_mb=self.memory_used_mb,
            hugepages=tuple(
                models.HugePages(size, total, free)
                for size, (total, free) in sorted(self.pages.items())
            ),
            sriov=tuple(sorted(self.sriov, key=lambda p: p.device)),
        )


def _page_size(traits: Iterable[str]) -> int | None:
    for trait in traits:
        match = _PAGE_SIZE_TRAIT.fullmatch(trait)
        if match is not None and int(match.group(1)) > 0:
            return int(match.group(1))
    return None


def _physnet(traits: Iterable[str]) -> str:
    return next((t[len(_PHYSNET) :].lower() for t in sorted(traits) if t.startswith(_PHYSNET)), "")


def _cell_ids(cells: list[Provider]) -> dict[str, int]:
    """Cell numbers from provider names (``host_NUMA1``), else their order by name."""
    numbers = [_CELL_NUMBER.search(p.name) for p in cells]
    if all(numbers) and len({int(m.group(1)) for m in numbers if m}) == len(cells):
        return {p.uuid: int(m.group(1)) for p, m in zip(cells, numbers, strict=True) if m}
    return {p.uuid: n for n, p in enumerate(sorted(cells, key=lambda p: p.name))}


def _ratio(tree: Provider) -> float:
    ratios = [p.amounts["VCPU"].allocation_ratio for p in tree.walk() if "VCPU" in p.amounts]
    return min(ratios) if ratios else 0.0


def host(tree: Provider, hypervisor: Hypervisor | None = None) -> models.Host | None:
    """The host a provider tree describes, or None when it is not a compute host."""
    if not any(rc in p.amounts for p in tree.walk() for rc in _CPU):
        return None  # a sharing storage pool, a network agent's tree, ...
    numa = [p for p in tree.walk() if NUMA_ROOT in p.traits]
    ids = _cell_ids(numa)
    cells = {p.uuid: _Cell(ids[p.uuid]) for p in numa}
    first = min(cells.values(), key=lambda c: c.id) if cells else _Cell(0)

    def visit(p: Provider, cell: _Cell | None) -> None:
        cell = cells.get(p.uuid, cell)
        (cell or first).add(p, in_cell=cell is not None)
        for child in p.children:
            visit(child, cell)

    visit(tree, None)
    labels = {trait: "true" for trait in sorted(tree.traits)}
    disk: Amount | None = tree.amounts.get("DISK_GB")
    labels["disk_gb"] = str(disk.usable if disk else 0)
    labels["disk_gb_used"] = str(disk.used if disk else 0)
    if hypervisor is not None:
        labels["hypervisor_state"], labels["hypervisor_status"] = (
            hypervisor.state,
            hypervisor.status,
        )
        if hypervisor.state == "down":  # nova-compute's service: the host's health
            labels[HOST_STATE] = "down"
        if not numa and hypervisor.numa_cells is not None:
            labels["hypervisor_numa_cells"] = str(hypervisor.numa_cells)
    return models.Host(
        name=tree.name,
        cells=tuple(sorted((c.model() for c in (cells.values() or [first])), key=lambda c: c.id)),
        traits=labels,
        cpu_allocation_ratio=_ratio(tree),
    )


def inventory(connect: Callable[[], Any]) -> models.Inventory:
    conn = connect()
    nova = placement.hypervisors(conn)
    hosts = [h for tree in placement.trees(conn) if (h := host(tree, nova.get(tree.name)))]
    hosts.sort(key=lambda h: h.name)
    return models.Inventory(hosts=tuple(hosts), collected_unix_ms=int(time.time() * 1000))


def usage(connect: Callable[[], Any]) -> models.Usage:
    """Instances, cores, RAM and ports per Keystone project id, over all projects."""
    conn = connect()
    projects: dict[str, dict[str, int]] = {}
    for server in conn.compute.servers(details=True, all_projects=True):
        amounts = projects.setdefault(str(server.project_id), {})
        flavor = server.flavor or {}
        amounts["instances"] = amounts.get("instances", 0) + 1
        amounts["cores"] = amounts.get("cores", 0) + int(flavor.get("vcpus") or 0)
        amounts["ram_mb"] = amounts.get("ram_mb", 0) + int(flavor.get("ram") or 0)
    for port in conn.network.ports():
        amounts = projects.setdefault(str(port.project_id), {})
        amounts["ports"] = amounts.get("ports", 0) + 1
    return models.Usage(projects=projects)
