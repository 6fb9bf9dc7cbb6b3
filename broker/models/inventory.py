"""A site's hardware inventory as the broker keeps it (``inventory/<id>``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class HugePages:
    page_size_kb: int
    total: int
    free: int


@dataclass(frozen=True, slots=True)
class SriovPool:
    physnet: str
    device: str
    vfs_total: int
    vfs_used: int = 0


@dataclass(frozen=True, slots=True)
class NumaCell:
    id: int
    cpus_total: int
    pcpus_total: int
    memory_mb: int
    pcpus_used: int = 0
    vcpus_used: int = 0
    memory_used_mb: int = 0
    hugepages: tuple[HugePages, ...] = ()
    sriov: tuple[SriovPool, ...] = ()


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    cells: tuple[NumaCell, ...]
    traits: dict[str, str] = field(default_factory=dict)
    cpu_allocation_ratio: float = 0.0
    """Shared vCPUs per non-dedicated CPU, as the site sent it; 0 = not sent."""


@dataclass(frozen=True, slots=True)
class Inventory:
    site: str
    hosts: tuple[Host, ...]
    collected_ms: int = 0

    def summary(self) -> dict[str, int]:
        """Totals across hosts, for listings."""
        cells = [c for h in self.hosts for c in h.cells]
        return {
            "hosts": len(self.hosts),
            "numa_cells": len(cells),
            "cpus": sum(c.cpus_total for c in cells),
            "pcpus": sum(c.pcpus_total for c in cells),
            "pcpus_free": sum(c.pcpus_total - c.pcpus_used for c in cells),
            "memory_mb": sum(c.memory_mb for c in cells),
            "hugepages_free_mb": sum(
                hp.free * hp.page_size_kb // 1024 for c in cells for hp in c.hugepages
            ),
            "sriov_vfs_free": sum(p.vfs_total - p.vfs_used for c in cells for p in c.sriov),
        }
