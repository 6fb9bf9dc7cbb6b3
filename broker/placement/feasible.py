"""Feasibility checkers: which sites (vectorised) and hosts (one by one) can take a member.

Each site checker answers for every site at once (``Checker.feasible`` returns a boolean
column) and can say, for one filtered site, why (``Checker.reason``). The capacity
checkers look at the best single NUMA cell of a site, a necessary condition; the exact
answer — one cell holding cores, memory and VFs together — comes from ``host_fit`` for the
hosts the planner actually tries, and a host that fails says which cell lacks what.

Invariant: a site the pipeline keeps passed every checker; a site it drops is explained
by the first checker that dropped it (nomad's ``FeasibilityChecker`` chain).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from broker.models.vnf import LocationBound, Need, Vdu
from broker.placement import claims as cl
from broker.placement.snapshot import BoolArray, SiteView, Snapshot


@dataclass(frozen=True, slots=True)
class Ask:
    """What one VDU's members ask of a site."""

    vdu: Vdu
    need: Need
    selectors: tuple[tuple[str, str], ...] = ()
    bounds: tuple[LocationBound, ...] = ()
    tag: str = field(default="")


class Checker(Protocol):
    name: str

    def feasible(self, snap: Snapshot, ask: Ask) -> BoolArray:
        """One boolean per site (``snap.order``): may this site take one member?"""
        ...

    def reason(self, snap: Snapshot, ask: Ask, site: SiteView) -> str:
        """Why ``site`` was filtered (only called for sites that failed)."""
        ...


class SiteUpChecker:
    name = "site-up"

    def feasible(self, snap: Snapshot, ask: Ask) -> BoolArray:
        return snap.up

    def reason(self, snap: Snapshot, ask: Ask, site: SiteView) -> str:
        if site.spec is None:
            return "site is not registered"
        if site.inventory is None:
            return "site has reported no inventory"
        return f"site is {site.health}, not UP"


class DrainChecker:
    """A site being drained for maintenance (``drains/<site>``) takes no new member: new
    VNFs, re-placements and moves all go elsewhere until it is undrained."""

    name = "drained"

    def feasible(self, snap: Snapshot, ask: Ask) -> BoolArray:
        return ~snap.drained

    def reason(self, snap: Snapshot, ask: Ask, site: SiteView) -> str:
        return f"site is being drained for maintenance (drains/{site.id}); undrain it first"


class SelectorChecker:
    name = "selectors"

    def __init__(self) -> None:
        self._cache: dict[tuple[tuple[tuple[str, str], ...], int], BoolArray] = {}

    def feasible(self, snap: Snapshot, ask: Ask) -> BoolArray:
        if not ask.selectors:
            return np.ones(len(snap.order), dtype=bool)
        key = (ask.selectors, snap.version)
        mask = self._cache.get(key)
        if mask is None:
            if len(self._cache) > 256:
                self._cache.clear()
            mask = np.array([_matches(s, ask.selectors) for s in snap.order], dtype=bool)
            self._cache[key] = mask
        return mask

    def reason(self, snap: Snapshot, ask: Ask, site: SiteView) -> str:
        labels = site.spec.labels if site.spec else {}
        wrong = [
            f"{k}={v} (site: {labels.get(k, 'unset')})"
            for k, v in ask.selectors
            if labels.get(k) != v
        ]
        return "selector not matched: " + ", ".join(wrong)


def _matches(site: SiteView, selectors: Sequence[tuple[str, str]]) -> bool:
    labels = site.spec.labels if site.spec else {}
    return all(labels.get(k) == v for k, v in selectors)


class LatencyChecker:
    name = "latency"

    def feasible(self, snap: Snapshot, ask: Ask) -> BoolArray:
        mask = np.ones(len(snap.order), dtype=bool)
        for bound in ask.bounds:
            mask &= snap.latency_to(bound.location) <= bound.max_ms
        return mask

    def reason(self, snap: Snapshot, ask: Ask, site: SiteView) -> str:
        for bound in ask.bounds:
            ms = float(snap.latency_to(bound.location)[site.idx])
            if ms == float("inf"):
                return f"no latency measured between the site and {bound.location}"
            if ms > bound.max_ms:
                return f"latency to {bound.location} is {ms:g} ms, bound {bound.max_ms:g} ms"
        return "latency bound not met"


class CoresChecker:
    name = "numa-cores"

    def feasible(self, snap: Snapshot, ask: Ask) -> BoolArray:
        column = snap.pcpus if ask.need.dedicated else snap.vcpus
        return column >= ask.need.vcpus

    def reason(self, snap: Snapshot, ask: Ask, site: SiteView) -> str:
        what = "pinned cores" if ask.need.dedicated else "vCPUs"
        column = snap.pcpus if ask.need.dedicated else snap.vcpus
        total = sum(
            (c.pcpus_free if ask.need.dedicated else c.vcpus_free)
            for h in site.hosts
            for c in h.cells
        )
        return (
            f"no NUMA node has {ask.need.vcpus} free {what} (best node: "
            f"{int(column[site.idx])}; whole site: {total})"
        )


class MemoryChecker:
    name = "numa-memory"

    def feasible(self, snap: Snapshot, ask: Ask) -> BoolArray:
        size = ask.need.page_size_kb
        if not size:
            return snap.mem >= ask.need.memory_mb
        column = snap.pages.get(size)
        if column is None:
            return np.zeros(len(snap.order), dtype=bool)
        return column >= ask.need.memory_mb

    def reason(self, snap: Snapshot, ask: Ask, site: SiteView) -> str:
        size = ask.need.page_size_kb
        if not size:
            return (
                f"no NUMA node has {ask.need.memory_mb} MiB free (best node: {snap.mem[site.idx]})"
            )
        column = snap.pages.get(size)
        best = int(column[site.idx]) if column is not None else 0
        return (
            f"no NUMA node has {ask.need.memory_mb} MiB free in {size // 1024} MiB huge "
            f"pages (best node: {best} MiB)"
        )


class VfChecker:
    name = "sriov-vfs"

    def feasible(self, snap: Snapshot, ask: Ask) -> BoolArray:
        mask = np.ones(len(snap.order), dtype=bool)
        columns = snap.vfs_cell if ask.need.vfs_local else snap.vfs_site
        for net, n in ask.need.vfs:
            column = columns.get(net)
            if column is None:
                return np.zeros(len(snap.order), dtype=bool)
            mask &= column >= n
        return mask

    def reason(self, snap: Snapshot, ask: Ask, site: SiteView) -> str:
        columns = snap.vfs_cell if ask.need.vfs_local else snap.vfs_site
        where = "NUMA node" if ask.need.vfs_local else "host"
        for net, n in ask.need.vfs:
            column = columns.get(net)
            best = int(column[site.idx]) if column is not None else 0
            if best < n:
                return f"no {where} has {n} free VFs on {net} (best: {best})"
        return "SR-IOV VFs short"


class DataPathChecker:
    """Some host of the site offers every data path the member's ports ask for
    (``claims.missing_data_paths``: the traits the site's agent reports, such as
    ``CUSTOM_OVS_DPDK`` once a userspace OVS bridge is applied)."""

    name = "data-path"

    def __init__(self) -> None:
        self._cache: dict[tuple[tuple[str, ...], int], BoolArray] = {}

    def feasible(self, snap: Snapshot, ask: Ask) -> BoolArray:
        paths = ask.need.data_paths
        if not paths:
            return np.ones(len(snap.order), dtype=bool)
        key = (paths, snap.version)
        mask = self._cache.get(key)
        if mask is None:
            if len(self._cache) > 256:
                self._cache.clear()
            mask = np.array([self._offered(s, ask) for s in snap.order], dtype=bool)
            self._cache[key] = mask
        return mask

    @staticmethod
    def _offered(site: SiteView, ask: Ask) -> bool:
        return any(not cl.missing_data_paths(h, ask.need) for h in site.hosts)

    def reason(self, snap: Snapshot, ask: Ask, site: SiteView) -> str:
        wanted = ", ".join(
            f"{p} ({cl.DATA_PATH_TRAITS[p]})" if p in cl.DATA_PATH_TRAITS else p
            for p in ask.need.data_paths
        )
        return f"no host offers the data path {wanted}"


class ScopeChecker:
    """Only the sites an operator may act at: every site of ``regions``, and ``sites``
    (the API's role policy; a VNF created by a scoped operator carries its scope)."""

    name = "scope"

    def __init__(self, regions: Iterable[str], sites: Iterable[str]) -> None:
        self.regions, self.sites = frozenset(regions), frozenset(sites)

    def feasible(self, snap: Snapshot, ask: Ask) -> BoolArray:
        return np.array(
            [
                s.id in self.sites or (s.spec is not None and s.spec.region in self.regions)
                for s in snap.order
            ],
            dtype=bool,
        )

    def reason(self, snap: Snapshot, ask: Ask, site: SiteView) -> str:
        where = sorted(self.regions) + sorted(self.sites)
        return f"outside the creator's scope ({', '.join(where) or 'nowhere'})"


class QuotaChecker:
    """The tenant's quota: every site or none. Last in the chain, as nomad's quota
    iterator is last among its feasibility iterators; ``short`` is the ledger's refusal
    (which class, the request, what is left), None when the VNF fits."""

    name = "quota"

    def __init__(self, short: str | None) -> None:
        self.short = short

    def feasible(self, snap: Snapshot, ask: Ask) -> BoolArray:
        return np.full(len(snap.order), self.short is None, dtype=bool)

    def reason(self, snap: Snapshot, ask: Ask, site: SiteView) -> str:
        return self.short or ""


def refusal(checkers: Sequence[Checker]) -> str:
    """The quota's refusal among ``checkers`` ("" when none refuses): tenant-wide, it is
    the plan's reason whatever else failed."""
    return next((c.short for c in checkers if isinstance(c, QuotaChecker) and c.short), "")


def for_request(
    scope: tuple[Iterable[str], Iterable[str]] | None, short: str | None
) -> list[Checker]:
    """A request's own checkers, after the defaults: its creator's scope (regions, sites;
    None: anywhere), then the tenant's quota."""
    scoped: list[Checker] = [] if scope is None else [ScopeChecker(*scope)]
    return [*scoped, QuotaChecker(short)]


def default_checkers() -> list[Checker]:
    return [
        SiteUpChecker(),
        DrainChecker(),
        SelectorChecker(),
        LatencyChecker(),
        CoresChecker(),
        MemoryChecker(),
        VfChecker(),
        DataPathChecker(),
    ]


@dataclass(slots=True)
class SiteFilter:
    """The outcome of the site checkers for one ask: ``mask`` and the columns behind it."""

    ask: Ask
    mask: BoolArray
    results: list[tuple[Checker, BoolArray]]

    def reason(self, snap: Snapshot, site: SiteView) -> str | None:
        """The first checker's reason for dropping ``site``, None when it passed."""
        for checker, passed in self.results:
            if not passed[site.idx]:
                return f"{checker.name}: {checker.reason(snap, self.ask, site)}"
        return None

    def counts(self) -> dict[str, int]:
        """How many sites each checker dropped first."""
        out: dict[str, int] = {}
        left = np.ones(len(self.mask), dtype=bool)
        for checker, passed in self.results:
            dropped = int(np.count_nonzero(left & ~passed))
            if dropped:
                out[checker.name] = dropped
            left &= passed
        return out


def filter_sites(snap: Snapshot, ask: Ask, checkers: Sequence[Checker]) -> SiteFilter:
    snap.ensure_arrays()
    results = [(c, c.feasible(snap, ask)) for c in checkers]
    mask = np.ones(len(snap.order), dtype=bool)
    for _, passed in results:
        mask = mask & passed
    return SiteFilter(ask, mask, results)
