"""The placement snapshot: every site's spec, health, free hardware and latency, in memory.

Decisions read only this snapshot, so a decision costs microseconds per site, not an etcd
round trip. It is a cache (invariant 1): ``load`` lists ``sites/``, ``health/``,
``inventory/``, ``claims/``, ``drains/`` and ``latency`` at one revision; ``follow``
keeps it current from watches, re-listing when a watch breaks. Each key remembers the
``mod_revision`` it was read at, and the commit compares exactly those revisions, so a
decision made on a stale snapshot can never land — it conflicts, the snapshot catches
up, and it retries.

Free capacity = reported inventory − claims the inventory has not absorbed yet. Per-site
summaries (the best single cell per resource) sit in numpy columns so site-level checks
and scores are vectorised over all sites at once. Latency entries name sites or metro
locations (a site's ``location`` label), so 1,000 sites need not mean 500,000 pairs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from broker import errors
from broker.models import codec
from broker.models.inventory import Inventory
from broker.models.site import SiteHealth, SiteSpec
from broker.placement import claims as cl
from broker.store import follow as feed
from broker.store import keys
from broker.store.protocol import Get, KeyValue, Store

log = logging.getLogger(__name__)

CPU_ALLOCATION_RATIO = 4.0
"""Shared vCPUs per non-dedicated CPU for a host whose site did not send its own ratio (an
older agent): Nova's default. Hosts carry the ratio their site applies."""
LIST_BATCH = 64
"""Inventories per listing transaction (each up to ~40 KiB; etcd answers up to 4 MiB)."""
PREFIXES = (keys.SITES, keys.HEALTH, keys.INVENTORY, keys.CLAIMS, keys.DRAINS, keys.LATENCY)
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class SiteView:
    """One site as placement sees it; ``hosts`` carry free (not total) counters."""

    __slots__ = (
        "claims",
        "claims_rev",
        "cost",
        "cpus_total",
        "drained",
        "health",
        "host_by_name",
        "hosts",
        "id",
        "idx",
        "inv_rev",
        "inventory",
        "ratios",
        "spec",
        "util",
    )

    def __init__(self, site_id: str, idx: int) -> None:
        self.id = site_id
        self.idx = idx
        self.spec: SiteSpec | None = None
        self.health = "UNKNOWN"
        self.drained = False
        """Being drained for maintenance (``drains/<site>``): no new member goes here."""
        self.inventory: Inventory | None = None
        self.inv_rev = 0
        self.claims: dict[str, cl.Claim] = {}
        self.claims_rev = 0
        self.hosts: list[cl.HostView] = []
        self.host_by_name: dict[str, cl.HostView] = {}
        self.ratios: dict[str, float] = {}
        """Each host's cpu allocation ratio, as its site sent it (or the default)."""
        self.cpus_total = 0
        self.util = 0.0
        self.cost = 1.0

    def domain(self, scope: str, host: str) -> str:
        """The value of anti-affinity ``scope`` for a member on ``host`` of this site."""
        spec = self.spec
        if scope == "host":
            return f"{self.id}/{host}"
        if scope == "site" or spec is None:
            return self.id
        if scope == "region":
            return spec.region
        if scope == "zone":
            return f"{spec.region}/{spec.zone}"
        label = scope.partition(":")[2]
        return spec.failure_domains.get(label, f"site:{self.id}")

    def rebuild(self) -> None:
        """Free counters from the reported inventory minus the claims it has not seen."""
        inv = self.inventory
        self.hosts, self.cpus_total, used = [], 0, 0.0
        self.ratios = {}
        if inv is not None:
            for host in inv.hosts:
                ratio = self.ratios[host.name] = host.cpu_allocation_ratio or CPU_ALLOCATION_RATIO
                cells = []
                for c in host.cells:
                    shared = int((c.cpus_total - c.pcpus_total) * ratio)
                    cells.append(
                        cl.Cell(
                            c.id,
                            c.pcpus_total - c.pcpus_used,
                            shared - c.vcpus_used,
                            c.memory_mb - c.memory_used_mb,
                            {p.page_size_kb: p.free for p in c.hugepages},
                            _pools(c.sriov),
                            c.pcpus_total,
                        )
                    )
                    self.cpus_total += c.cpus_total
                    used += c.pcpus_used + c.vcpus_used / ratio
                self.hosts.append(cl.HostView(host.name, cells, dict(host.traits)))
        self.host_by_name = {h.name: h for h in self.hosts}
        for claim in self.claims.values():
            if not self.absorbed(claim):
                self.hold(claim)
        self.util = used / self.cpus_total if self.cpus_total else 1.0

    def absorbed(self, claim: cl.Claim) -> bool:
        inv = self.inventory
        return bool(claim.ready_ms and inv is not None and inv.collected_ms > claim.ready_ms)

    def hold(self, claim: cl.Claim, sign: int = 1) -> None:
        host = self.host_by_name.get(claim.host)
        if host is not None:
            cl.take(host, claim, sign)
        if self.cpus_total:
            ratio = self.ratios.get(claim.host, CPU_ALLOCATION_RATIO)
            cpus = claim.pcpus + claim.vcpus / ratio
            self.util += sign * cpus / self.cpus_total


def _pools(pools: Iterable[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in pools:
        out[p.physnet] = out.get(p.physnet, 0) + p.vfs_total - p.vfs_used
    return out


class Snapshot:
    """All sites, with vectorised per-site summaries; see the module docstring."""

    def __init__(self) -> None:
        self.sites: dict[str, SiteView] = {}
        self.order: list[SiteView] = []
        self.revision = 0
        self.ready = asyncio.Event()
        """Set once ``follow`` has listed every prefix."""
        self._listed: set[str] = set()
        self.version = 0
        """Bumped whenever site specs or the site list change (selector caches key on it)."""
        self.latency: dict[str, dict[str, float]] = {}
        self.latency_rev = 0
        self._revs: dict[str, int] = {}
        self._latency_cache: dict[str, FloatArray] = {}
        self._regions: dict[str, int] = {}
        self.dirty = True
        self.up: BoolArray = np.zeros(0, dtype=bool)
        self.drained: BoolArray = np.zeros(0, dtype=bool)
        self.region: IntArray = np.zeros(0, dtype=np.int64)
        self.pcpus: IntArray = np.zeros(0, dtype=np.int64)
        self.vcpus: IntArray = np.zeros(0, dtype=np.int64)
        self.mem: IntArray = np.zeros(0, dtype=np.int64)
        self.util: FloatArray = np.zeros(0)
        self.cost: FloatArray = np.zeros(0)
        self.pages: dict[int, IntArray] = {}
        """Page size → the most MiB of that size free in one cell of the site."""
        self.vfs_cell: dict[str, IntArray] = {}
        self.vfs_site: dict[str, IntArray] = {}

    # -- reading the store -------------------------------------------------------------

    @classmethod
    async def load(cls, store: Store) -> Snapshot:
        snap = cls()
        await snap.relist(store)
        return snap

    async def relist(self, store: Store) -> None:
        """Read everything again (``load``; ``follow`` lists prefix by prefix itself)."""
        for prefix in PREFIXES:
            kvs, revision = await self._list(store, prefix)
            present = set()
            for kv in kvs:
                present.add(kv.key)
                self.apply(kv.key, kv.value, kv.mod_revision)
            self._forget(feed.Listed(prefix, revision, frozenset(present)))
        self.arrays()

    async def _list(self, store: Store, prefix: str) -> tuple[list[KeyValue], int]:
        """One prefix's listing. Inventories and claims are read per site in batches:
        1,000 sites x 50 hosts of inventory is far more than one etcd response may carry.
        The revision is the oldest read's, so the watch after it misses nothing (``apply``
        ignores what it replays)."""
        if prefix not in (keys.INVENTORY, keys.CLAIMS):
            kvs, revision = await store.get_prefix(prefix)
            return [kv for kv in kvs if prefix != keys.LATENCY or kv.key == prefix], revision
        sites, low = await store.get_prefix(keys.SITES)
        ids = sorted(keys.name_in(keys.SITES, kv.key) for kv in sites)
        found: list[KeyValue] = []
        for i in range(0, len(ids), LIST_BATCH):
            gets = [Get(f"{prefix}{site}") for site in ids[i : i + LIST_BATCH]]
            result = await store.txn([], gets)
            low = min(low, result.revision)
            found += [r[0] for r in result.responses if r]
        return found, low

    def _forget(self, listed: feed.Listed) -> None:
        for key in feed.forgotten(listed, self._revs):
            self.apply(key, None, listed.revision)

    async def follow(self, store: Store, *, backoff: feed.Backoff = feed.RELIST) -> None:
        """Keep current until cancelled, each prefix followed on its own (``store.follow``);
        ``ready`` is set once every prefix was listed."""
        async with asyncio.TaskGroup() as group:
            for prefix in PREFIXES:
                group.create_task(self._follow(store, prefix, backoff))

    async def _follow(self, store: Store, prefix: str, backoff: feed.Backoff) -> None:
        async def lister(prefix: str) -> tuple[list[KeyValue], int]:
            return await self._list(store, prefix)

        async for item in feed.follow(store, prefix, backoff=backoff, lister=lister):
            if isinstance(item, feed.Listed):
                self._forget(item)
                self._listed.add(prefix)
                if len(self._listed) == len(PREFIXES):
                    self.ensure_arrays()
                    self.ready.set()
            elif prefix != keys.LATENCY or item.key == keys.LATENCY:
                key, value = feed.change(item)
                self.apply(key, value or None, item.mod_revision)

    def apply(self, key: str, value: bytes | None, mod_revision: int) -> None:
        """One key's new value (None: deleted) at ``mod_revision``; older news is ignored."""
        if mod_revision <= self._revs.get(key, 0) and value is not None:
            return
        if value is None:
            self._revs.pop(key, None)
        else:
            self._revs[key] = mod_revision
        self.revision = max(self.revision, mod_revision)
        if key == keys.LATENCY:
            self._set_latency(value)
            return
        prefix, site_id = keys.split_family(key)
        site = self.sites.get(site_id)
        if site is None:
            if value is None:
                return
            site = self.sites[site_id] = SiteView(site_id, len(self.order))
            self.order.append(site)
            self.dirty = True
        self._apply_site(site, prefix, value, mod_revision)

    def _apply_site(self, site: SiteView, prefix: str, value: bytes | None, rev: int) -> None:
        if prefix == keys.SITES:
            site.spec = codec.decode(SiteSpec, value) if value is not None else None
            site.cost = _cost(site.spec)
            self.version += 1
            self.dirty = True
        elif prefix == keys.HEALTH:
            site.health = str(codec.decode(SiteHealth, value).state) if value else "UNKNOWN"
        elif prefix == keys.DRAINS:
            site.drained = value is not None
        elif prefix == keys.INVENTORY:
            site.inventory = codec.decode(Inventory, value) if value is not None else None
            site.inv_rev = rev if value is not None else 0
            site.rebuild()
        elif prefix == keys.CLAIMS:
            site.claims = cl.decode(value) if value is not None else {}
            site.claims_rev = rev if value is not None else 0
            site.rebuild()
        self.refresh_row(site)

    def _set_latency(self, value: bytes | None) -> None:
        self.latency = {}
        for entry in [] if not value else codec_json(value).get("entries", []):
            a, b, ms = str(entry["a"]), str(entry["b"]), float(entry["ms"])
            self.latency.setdefault(a, {})[b] = ms
            self.latency.setdefault(b, {})[a] = ms
        self._latency_cache.clear()
        self.latency_rev = self._revs.get(keys.LATENCY, 0)

    # -- committed claims ----------------------------------------------------------------

    def add_claims(self, site: SiteView, new: Iterable[cl.Claim], claims_rev: int) -> None:
        """Claims this process just committed at ``claims_rev``: apply without a re-read."""
        for claim in new:
            site.claims[claim.member] = claim
            site.hold(claim)
        site.claims_rev = claims_rev
        self._revs[keys.claims(site.id)] = claims_rev
        self.revision = max(self.revision, claims_rev)
        self.refresh_row(site)

    # -- vectorised columns -------------------------------------------------------------

    def arrays(self) -> None:
        """(Re)build every column; rows are then kept current by ``refresh_row``."""
        n = len(self.order)
        self.up = np.zeros(n, dtype=bool)
        self.drained = np.zeros(n, dtype=bool)
        self.region = np.zeros(n, dtype=np.int64)
        self.pcpus, self.vcpus, self.mem = (np.zeros(n, dtype=np.int64) for _ in range(3))
        self.util, self.cost = np.zeros(n), np.ones(n)
        self.pages, self.vfs_cell, self.vfs_site = {}, {}, {}
        self._latency_cache.clear()
        self.dirty = False
        for site in self.order:
            self.refresh_row(site)

    def refresh_row(self, site: SiteView) -> None:
        if self.dirty:
            return  # ``arrays`` will rebuild every row
        i = site.idx
        spec = site.spec
        self.up[i] = site.health == "UP" and spec is not None and site.inventory is not None
        self.drained[i] = site.drained
        self.region[i] = self._regions.setdefault(spec.region, len(self._regions)) if spec else -1
        self.util[i] = site.util
        self.cost[i] = site.cost
        best_p = best_v = best_m = 0
        pages: dict[int, int] = {}
        cell_vfs: dict[str, int] = {}
        site_vfs: dict[str, int] = {}
        for host in site.hosts:
            for c in host.cells:
                best_p = max(best_p, c.pcpus_free)
                best_v = max(best_v, c.vcpus_free)
                best_m = max(best_m, c.mem_free)
                for size, free in c.pages.items():
                    pages[size] = max(pages.get(size, 0), free * size // 1024)
                for net, free in c.vfs.items():
                    cell_vfs[net] = max(cell_vfs.get(net, 0), free)
                    site_vfs[net] = site_vfs.get(net, 0) + free
        self.pcpus[i], self.vcpus[i], self.mem[i] = best_p, best_v, best_m
        _set(self.pages, pages, i, len(self.order))
        _set(self.vfs_cell, cell_vfs, i, len(self.order))
        _set(self.vfs_site, site_vfs, i, len(self.order))

    def ensure_arrays(self) -> None:
        if self.dirty or len(self.up) != len(self.order):
            self.arrays()

    def latency_to(self, location: str) -> FloatArray:
        """Each site's latency to ``location`` in ms (inf where nobody measured it)."""
        found = self._latency_cache.get(location)
        if found is None:
            row = self.latency.get(location, {})
            found = np.array(
                [row.get(s.id, row.get(_location(s), math.inf)) for s in self.order],
                dtype=np.float64,
            )
            if location in self.sites:
                found[self.sites[location].idx] = 0.0
            self._latency_cache[location] = found
        return found

    def latency_between(self, a: str, b: str) -> float:
        """Measured between the sites, else between their ``location`` labels."""
        if a == b:
            return 0.0
        found = self.latency.get(a, {}).get(b)
        if found is not None:
            return found
        la, lb = _location(self.sites[a]), _location(self.sites[b])
        if la == lb:
            return self.latency.get(la, {}).get(la, 0.0)
        return self.latency.get(la, {}).get(lb, math.inf)

    def regions(self) -> int:
        return len({s.spec.region for s in self.order if s.spec is not None})

    def physnets(self) -> set[str]:
        return set(self.vfs_site)


def _set(columns: dict[Any, IntArray], values: dict[Any, int], i: int, n: int) -> None:
    for name, column in columns.items():
        column[i] = values.get(name, 0)
    for name, value in values.items():
        if name not in columns:
            columns[name] = np.zeros(n, dtype=np.int64)
            columns[name][i] = value


def _location(site: SiteView) -> str:
    """The latency matrix name of a site's metro: its ``location`` label, else its id."""
    spec = site.spec
    return spec.labels.get("location", site.id) if spec is not None else site.id


def _cost(spec: SiteSpec | None) -> float:
    """A site's relative cost from its ``cost`` label (1.0 when absent or not a number)."""
    if spec is None:
        return 1.0
    try:
        return max(0.0, float(spec.labels.get("cost", "1")))
    except ValueError:
        return 1.0


def codec_json(value: bytes) -> dict[str, Any]:
    data = json.loads(value)
    return data if isinstance(data, dict) else {}


class Live:
    """The replica's snapshot, kept current by ``Snapshot.follow``.

    ``running.py`` owns one per replica; the API's dry-runs and explanations and the
    leader's VNF controller read it through ``current``, never a cold ``Snapshot.load``
    per request. It is followed from the first ``current`` on (or from ``run``), not
    from the replica's start: every site's inventory costs each replica that holds it
    ~23 KiB per site (measured, ``tests/perf/session_memory.py``), which a follower
    that never plans need not pay. A follow that died is started again by the next
    ``current``.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.snap = Snapshot()
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self._task = asyncio.current_task()
        await self.snap.follow(self.store)

    async def current(self) -> Snapshot:
        """The snapshot, once every prefix has been listed."""
        if self._task is None or (self._task.done() and not self.snap.ready.is_set()):
            self._task = asyncio.get_running_loop().create_task(self.snap.follow(self.store))
        if not self.snap.ready.is_set():
            ready = asyncio.ensure_future(self.snap.ready.wait())
            await asyncio.wait([ready, self._task], return_when=asyncio.FIRST_COMPLETED)
            if not ready.done():
                ready.cancel()
                raise errors.BrokerError(f"the placement snapshot stopped: {self._task!r}")
        self.snap.ensure_arrays()
        return self.snap
