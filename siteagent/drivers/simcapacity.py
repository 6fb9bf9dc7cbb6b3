"""The simulated site's hardware and its claims: where a server fits, and what it holds.

A ``Claim`` is everything one server holds on one NUMA cell of one host: dedicated
pCPUs or shared vCPUs, small-page memory or huge pages of one size, and SR-IOV VFs.
``Capacity.place`` finds a cell that fits a ``Need`` (first fit, hosts and cells in
order, so the same requests always land in the same places); ``take`` and ``give``
apply and release a claim exactly. Counters never go below zero or above capacity:
``place`` only returns claims that fit, and ``give`` only releases what ``take`` took.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from siteagent import models, sim_config
from siteagent.drivers import specs


@dataclass(frozen=True, slots=True)
class Need:
    """What one server asks of a single NUMA cell."""

    vcpus: int
    dedicated: bool
    memory_mb: int
    page_size: specs.PageSize = specs.SMALL_PAGES
    vfs: Mapping[str, int] = field(default_factory=dict)
    """Physnet → VFs."""

    def describe(self) -> str:
        cpus = f"{self.vcpus} {'dedicated pCPUs' if self.dedicated else 'vCPUs'}"
        pages = "" if self.page_size == specs.SMALL_PAGES else f" in {self.page_size} pages"
        vfs = "".join(f", {n} VFs on {net}" for net, n in sorted(self.vfs.items()))
        return f"{cpus}, {self.memory_mb} MiB{pages}{vfs} on one NUMA cell"


@dataclass(frozen=True, slots=True)
class Claim:
    host: int
    cell: int
    pcpus: int = 0
    vcpus: int = 0
    memory_mb: int = 0
    pages: tuple[int, int] | None = None
    """(page size in KiB, pages)."""
    vfs: tuple[tuple[int, int], ...] = ()
    """(pool index in the cell, VFs)."""


@dataclass(slots=True)
class _Pool:
    physnet: str
    device: str
    total: int
    used: int = 0


@dataclass(slots=True)
class _Cell:
    id: int
    cpus: int
    pcpus: int
    memory_mb: int
    vcpu_capacity: int
    pages: dict[int, list[int]]
    """Page size in KiB → [total, used]."""
    pools: list[_Pool]
    pcpus_used: int = 0
    vcpus_used: int = 0
    memory_used_mb: int = 0


@dataclass(slots=True)
class _Host:
    name: str
    cells: list[_Cell]
    traits: dict[str, str]


class Capacity:
    """Every host of a simulated site with its mutable claim counters."""

    def __init__(self, config: sim_config.SimSiteConfig) -> None:
        ratio = self.cpu_allocation_ratio = config.cpu_allocation_ratio
        self.hosts = [
            _Host(
                name=host.name,
                traits=dict(host.traits),
                cells=[
                    _Cell(
                        id=cell.id,
                        cpus=cell.cpus,
                        pcpus=cell.pcpus,
                        memory_mb=cell.memory_mb,
                        vcpu_capacity=int((cell.cpus - cell.pcpus) * ratio),
                        pages={size: [n, 0] for size, n in sorted(cell.hugepages.items())},
                        pools=[_Pool(p.physnet, p.device, p.vfs) for p in cell.sriov],
                    )
                    for cell in host.cells
                ],
            )
            for host in config.hosts
        ]

    def host_name(self, claim: Claim) -> str:
        return self.hosts[claim.host].name

    def cell_id(self, claim: Claim) -> int:
        return self.hosts[claim.host].cells[claim.cell].id

    def place(
        self, need: Need, *, only: Collection[str] | None = None, avoid: Collection[str] = ()
    ) -> Claim | None:
        """The first cell that fits ``need`` on a host in ``only`` (if given), not in
        ``avoid``; ``None`` when none does."""
        for h, host in enumerate(self.hosts):
            if (only is not None and host.name not in only) or host.name in avoid:
                continue
            for c, cell in enumerate(host.cells):
                claim = _fit(cell, need, h, c)
                if claim is not None:
                    return claim
        return None

    def take(self, claim: Claim) -> None:
        self._add(claim, 1)

    def give(self, claim: Claim) -> None:
        self._add(claim, -1)

    def _add(self, claim: Claim, sign: int) -> None:
        cell = self.hosts[claim.host].cells[claim.cell]
        cell.pcpus_used += sign * claim.pcpus
        cell.vcpus_used += sign * claim.vcpus
        cell.memory_used_mb += sign * claim.memory_mb
        if claim.pages is not None:
            cell.pages[claim.pages[0]][1] += sign * claim.pages[1]
        for pool, count in claim.vfs:
            cell.pools[pool].used += sign * count

    def inventory(self, collected_unix_ms: int) -> models.Inventory:
        return models.Inventory(
            hosts=tuple(
                models.Host(
                    name=host.name,
                    traits=dict(host.traits),
                    cells=tuple(_cell_model(cell) for cell in host.cells),
                    cpu_allocation_ratio=self.cpu_allocation_ratio,
                )
                for host in self.hosts
            ),
            collected_unix_ms=collected_unix_ms,
        )


def _cell_model(cell: _Cell) -> models.NumaCell:
    return models.NumaCell(
        id=cell.id,
        cpus_total=cell.cpus,
        pcpus_total=cell.pcpus,
        memory_mb=cell.memory_mb,
        pcpus_used=cell.pcpus_used,
        vcpus_used=cell.vcpus_used,
        memory_used_mb=cell.memory_used_mb,
        hugepages=tuple(
            models.HugePages(page_size_kb=size, total=total, free=total - used)
            for size, (total, used) in cell.pages.items()
        ),
        sriov=tuple(
            models.SriovPool(physnet=p.physnet, device=p.device, vfs_total=p.total, vfs_used=p.used)
            for p in cell.pools
        ),
    )


def _fit(cell: _Cell, need: Need, host: int, index: int) -> Claim | None:
    if need.dedicated:
        if cell.pcpus - cell.pcpus_used < need.vcpus:
            return None
    elif cell.vcpu_capacity - cell.vcpus_used < need.vcpus:
        return None
    pages = _fit_pages(cell, need)
    if pages is None:  # small pages, or "any" falling back to them
        if need.page_size not in (specs.SMALL_PAGES, "any"):
            return None
        if cell.memory_mb - cell.memory_used_mb < need.memory_mb:
            return None
    vfs = _fit_vfs(cell, need.vfs)
    if vfs is None:
        return None
    return Claim(
        host=host,
        cell=index,
        pcpus=need.vcpus if need.dedicated else 0,
        vcpus=0 if need.dedicated else need.vcpus,
        memory_mb=0 if pages is not None else need.memory_mb,
        pages=pages,
        vfs=vfs,
    )


def _fit_pages(cell: _Cell, need: Need) -> tuple[int, int] | None:
    """(size, pages) of the huge page pool that backs the memory, as Nova picks it."""
    if need.page_size == specs.SMALL_PAGES:
        return None
    if isinstance(need.page_size, int):
        sizes = [need.page_size]
    else:  # large or any: the largest size that fits, as Nova prefers
        sizes = sorted(cell.pages, reverse=True)
    for size in sizes:
        if size not in cell.pages or (need.memory_mb * 1024) % size:
            continue
        wanted = need.memory_mb * 1024 // size
        total, used = cell.pages[size]
        if total - used >= wanted:
            return size, wanted
    return None


def _fit_vfs(cell: _Cell, wanted: Mapping[str, int]) -> tuple[tuple[int, int], ...] | None:
    taken: list[tuple[int, int]] = []
    for physnet, count in sorted(wanted.items()):
        left = count
        for index, pool in enumerate(cell.pools):
            if pool.physnet != physnet or left == 0:
                continue
            take = min(left, pool.total - pool.used)
            if take:
                taken.append((index, take))
                left -= take
        if left:
            return None
    return tuple(taken)
