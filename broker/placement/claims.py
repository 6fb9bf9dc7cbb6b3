"""Hardware claims: what one placed member holds on one NUMA cell of one host.

The broker keeps every claim of a site in one etcd value (``claims/<site>``), written by
the placement commit. A claim counts against the site's reported inventory until the
inventory has seen the server: ``ready_ms`` is when the member's server was observed
READY, and an inventory collected after that already includes it (``absorbed``).

Invariant: ``take`` and ``give`` move cell counters by exactly the claim, so planning
against a snapshot and undoing never drifts; counters never go below zero through
``take`` because the planner only takes what ``fits`` returned.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from broker.models.vnf import Need
from broker.store import keys
from broker.store.protocol import Put


@dataclass(frozen=True, slots=True)
class Claim:
    member: str
    """``<vnf id>/<member name>``."""
    host: str
    cell: int
    pcpus: int = 0
    vcpus: int = 0
    memory_mb: int = 0
    page_size_kb: int = 0
    pages: int = 0
    vfs: tuple[tuple[str, int, int], ...] = ()
    """(physnet, NUMA cell id, VFs)."""
    ready_ms: int = 0

    @property
    def vnf(self) -> str:
        return self.member.partition("/")[0]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"host": self.host, "cell": self.cell}
        for name in ("pcpus", "vcpus", "memory_mb", "page_size_kb", "pages", "ready_ms"):
            value = getattr(self, name)
            if value:
                out[name] = value
        if self.vfs:
            out["vfs"] = [list(v) for v in self.vfs]
        return out

    @classmethod
    def from_json(cls, member: str, data: dict[str, Any]) -> Claim:
        return cls(
            member=member,
            host=str(data["host"]),
            cell=int(data["cell"]),
            pcpus=int(data.get("pcpus", 0)),
            vcpus=int(data.get("vcpus", 0)),
            memory_mb=int(data.get("memory_mb", 0)),
            page_size_kb=int(data.get("page_size_kb", 0)),
            pages=int(data.get("pages", 0)),
            vfs=tuple((str(p), int(c), int(n)) for p, c, n in data.get("vfs", [])),
            ready_ms=int(data.get("ready_ms", 0)),
        )


_FRAGMENTS: dict[Claim, str] = {}
"""Each claim's JSON, kept: a site's claims value is rewritten whole by every commit that
touches the site, so without it a commit re-encodes every claim the site holds."""
_FRAGMENTS_MAX = 100_000


def _fragment(claim: Claim) -> str:
    found = _FRAGMENTS.get(claim)
    if found is None:
        if len(_FRAGMENTS) >= _FRAGMENTS_MAX:
            _FRAGMENTS.clear()
        found = _FRAGMENTS[claim] = json.dumps(claim.to_json(), separators=(",", ":"))
    return found


def encode(claims: dict[str, Claim]) -> bytes:
    """``{"claims": {member: claim, ...}}`` (members sorted), compact JSON."""
    body = ",".join(f"{json.dumps(m)}:{_fragment(c)}" for m, c in sorted(claims.items()))
    return ('{"claims":{' + body + "}}").encode()


def put(site_id: str, claims: dict[str, Claim]) -> Put:
    return Put(keys.claims(site_id), encode(claims))


def replace_ready(claim: Claim, ready_ms: int) -> Claim:
    return dataclasses.replace(claim, ready_ms=ready_ms)


def decode(value: bytes) -> dict[str, Claim]:
    if not value:
        return {}
    data = json.loads(value)
    return {m: Claim.from_json(m, c) for m, c in data.get("claims", {}).items()}


class Cell:
    """One NUMA cell's free capacity as placement sees it (reported minus claimed)."""

    __slots__ = ("id", "mem_free", "pages", "pcpus_free", "pcpus_total", "vcpus_free", "vfs")

    def __init__(
        self,
        id: int,
        pcpus_free: int,
        vcpus_free: int,
        mem_free: int,
        pages: dict[int, int],
        vfs: dict[str, int],
        pcpus_total: int = 0,
    ) -> None:
        self.id = id
        self.pcpus_free = pcpus_free
        self.vcpus_free = vcpus_free
        self.mem_free = mem_free
        self.pages = pages
        """Page size in KiB → free pages."""
        self.vfs = vfs
        """Physnet → free VFs."""
        self.pcpus_total = pcpus_total


class HostView:
    __slots__ = ("cells", "name", "traits")

    def __init__(self, name: str, cells: list[Cell], traits: dict[str, str]) -> None:
        self.name = name
        self.cells = cells
        self.traits = traits

    def cell(self, cell_id: int) -> Cell | None:
        for cell in self.cells:
            if cell.id == cell_id:
                return cell
        return None


def _core_fit(cell: Cell, need: Need) -> tuple[int, int] | None:
    """(pages, memory_mb from small pages) if cores and memory fit on ``cell``."""
    if need.dedicated:
        if cell.pcpus_free < need.vcpus:
            return None
    elif cell.vcpus_free < need.vcpus:
        return None
    if need.page_size_kb:
        wanted = need.memory_mb * 1024 // need.page_size_kb
        if (need.memory_mb * 1024) % need.page_size_kb or cell.pages.get(
            need.page_size_kb, 0
        ) < wanted:
            return None
        return wanted, 0
    if cell.mem_free < need.memory_mb:
        return None
    return 0, need.memory_mb


def fits(host: HostView, need: Need, member: str) -> Claim | None:
    """The first cell of ``host`` that holds all of ``need``; None when none does."""
    return next(options(host, need, member), None)


DATA_PATH_TRAITS = {"ovs-dpdk": "CUSTOM_OVS_DPDK", "sriov": "CUSTOM_SRIOV"}
"""The host trait (reported by the site's agent) that offers each accelerated data path."""


def missing_data_paths(host: HostView, need: Need) -> list[str]:
    """The data paths ``need`` asks that ``host`` does not offer (``kernel``: every host;
    ``sriov``: its trait, or VF pools the inventory reports)."""
    missing = []
    for path in need.data_paths:
        trait = DATA_PATH_TRAITS.get(path)
        if trait is None or host.traits.get(trait) == "true":
            continue
        if path == "sriov" and any(c.vfs for c in host.cells):
            continue
        missing.append(path)
    return missing


def options(host: HostView, need: Need, member: str) -> Iterator[Claim]:
    """Every distinct way ``host`` can hold ``need``: one claim per cell that fits.

    A cell whose free counters equal those of a cell already offered is skipped (the two
    claims are the same up to renaming the cell), unless VFs may come from other cells,
    where the cells' positions matter. Lazy: the signature of a cell is only computed
    when the caller asks for another claim, so taking the first one costs nothing extra.
    """
    if need.data_paths and missing_data_paths(host, need):
        return
    offered: set[tuple[object, ...]] = set()
    symmetric = need.vfs_local or not need.vfs
    for cell in host.cells:
        if symmetric and offered and signature(cell) in offered:
            continue
        claim = on_cell(host, cell, need, member)
        if claim is None:
            continue
        yield claim
        if symmetric:
            offered.add(signature(cell))


def signature(cell: Cell) -> tuple[object, ...]:
    """A cell's free counters: two cells with one signature can hold exactly the same."""
    return (
        cell.pcpus_free,
        cell.vcpus_free,
        cell.mem_free,
        tuple(sorted(cell.pages.items())),
        tuple(sorted(cell.vfs.items())),
    )


def host_signature(host: HostView) -> tuple[object, ...]:
    """A host's free counters cell by cell (cell ids included), and the data paths it
    offers (two hosts alike but for those are not interchangeable)."""
    paths = tuple(t for t in DATA_PATH_TRAITS.values() if host.traits.get(t) == "true")
    return (paths, *((c.id, *signature(c)) for c in host.cells))


def on_cell(host: HostView, cell: Cell, need: Need, member: str) -> Claim | None:
    """The claim ``member`` would hold with its cores on ``cell`` of ``host``, if it fits."""
    core = _core_fit(cell, need)
    if core is None:
        return None
    vfs = _vf_fit(host, cell, need)
    if vfs is None:
        return None
    pages, memory = core
    return Claim(
        member=member,
        host=host.name,
        cell=cell.id,
        pcpus=need.vcpus if need.dedicated else 0,
        vcpus=0 if need.dedicated else need.vcpus,
        memory_mb=memory,
        page_size_kb=need.page_size_kb if pages else 0,
        pages=pages,
        vfs=vfs,
    )


def _vf_fit(host: HostView, cell: Cell, need: Need) -> tuple[tuple[str, int, int], ...] | None:
    if not need.vfs:
        return ()
    if all(cell.vfs.get(net, 0) >= n for net, n in need.vfs):
        return tuple((net, cell.id, n) for net, n in need.vfs)
    if need.vfs_local:
        return None
    taken: list[tuple[str, int, int]] = []
    for net, n in need.vfs:  # preferred affinity: any cell of the host, local first
        left = n
        for other in [cell, *(c for c in host.cells if c is not cell)]:
            take = min(left, other.vfs.get(net, 0))
            if take:
                taken.append((net, other.id, take))
                left -= take
        if left:
            return None
    return tuple(taken)


def why_not(host: HostView, need: Need) -> str:
    """Why no cell of ``host`` fits ``need``, cell by cell."""
    missing = missing_data_paths(host, need) if need.data_paths else []
    if missing:
        traits = ", ".join(DATA_PATH_TRAITS.get(p, p) for p in missing)
        return f"no {' or '.join(missing)} data path on this host ({traits} not offered)"
    parts = []
    for cell in host.cells:
        short = []
        if need.dedicated and cell.pcpus_free < need.vcpus:
            short.append(f"{cell.pcpus_free} of {need.vcpus} pinned cores free")
        if not need.dedicated and cell.vcpus_free < need.vcpus:
            short.append(f"{cell.vcpus_free} of {need.vcpus} vCPUs free")
        if need.page_size_kb:
            have = cell.pages.get(need.page_size_kb, 0) * need.page_size_kb // 1024
            if have < need.memory_mb:
                short.append(
                    f"{have} of {need.memory_mb} MiB in {need.page_size_kb // 1024} MiB pages"
                )
        elif cell.mem_free < need.memory_mb:
            short.append(f"{cell.mem_free} of {need.memory_mb} MiB free")
        if need.vfs_local:
            for net, n in need.vfs:
                if cell.vfs.get(net, 0) < n:
                    short.append(f"{cell.vfs.get(net, 0)} of {n} VFs on {net}")
        parts.append(f"cell {cell.id}: {', '.join(short) or 'VFs elsewhere short'}")
    return "; ".join(parts)


def take(host: HostView, claim: Claim, sign: int = 1) -> None:
    """Apply (sign=1) or release (sign=-1) ``claim`` on ``host``'s counters."""
    cell = host.cell(claim.cell)
    if cell is not None:
        cell.pcpus_free -= sign * claim.pcpus
        cell.vcpus_free -= sign * claim.vcpus
        cell.mem_free -= sign * claim.memory_mb
        if claim.pages:
            size = claim.page_size_kb
            cell.pages[size] = cell.pages.get(size, 0) - sign * claim.pages
    for net, cell_id, n in claim.vfs:
        vf_cell = host.cell(cell_id)
        if vf_cell is not None:
            vf_cell.vfs[net] = vf_cell.vfs.get(net, 0) - sign * n
