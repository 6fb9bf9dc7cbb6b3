"""Quota sync: push each tenant's per-site quota, and reconcile reported usage.

Runs on the leader only. It watches the ledger (``quota/ledger/``, ``quota/limits/``,
``quota/classes/``), the agents' usage reports (``usage/``) and the site registry
(``sites/``), and reacts to every change — there is no polling period:

- **push**: for every tenant with a quota or usage and every registered site, the site
  limit is ``quota.sync.site_limits`` (global limit minus usage at every other site, plus
  headroom, capped by region/site limits). When it differs from what was pushed, the
  desired object ``desired/<site>/quota/<tenant>`` is rewritten with the next
  generation; the agent sets the site's Nova/Neutron/Cinder quota sets from it.
- **reconcile**: where an agent's report differs from the ledger's committed usage for
  ``drift_grace`` seconds, the difference is written into the ledger as an adjustment
  (so admission counts what really exists), with a ``quota.drift`` event, and exported
  as metrics.

Every write is a fenced transaction (invariant 3) that also compares what it read (the
desired object's revision; the tenant's ``seq`` and ledger revisions), so a deposed leader
and a racing reservation can never be overwritten. Invariant 7 (no oversubscription)
reaches into sites through the push: what is created at a site directly cannot exceed the
tenant's global remainder.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from broker.controllers import registry
from broker import errors
from broker.election import fencing
from broker.models import codec, event, objects
from broker.settings import BrokerSettings, QuotaSettings
from broker.store import follow, keys
from broker.store import protocol as p
from quota import layout
from quota import sync
from quota.models import (
    DEFAULT_CLASS,
    RESOURCE_CLASSES,
    Account,
    EffectiveLimits,
    TenantQuota,
    from_json,
    limits,
    to_json,
)

log = logging.getLogger(__name__)

KIND = objects.QUOTA.name
PREFIXES = (
    keys.QUOTA + "ledger/",
    keys.QUOTA + "limits/",
    keys.QUOTA + "classes/",
    keys.USAGE,
    keys.SITES,
)
"""What the controller follows: the ledger's tenants, limits and classes, the agents'
usage reports and the site registry."""


@dataclass(frozen=True, slots=True)
class QuotaSyncConfig:
    headroom: Mapping[str, int] = field(default_factory=dict)
    """Added to every pushed site limit, per class (absorbs usage-report lag)."""
    drift_grace: float = 5.0
    """Seconds a report must differ from the ledger before it is recorded as drift."""
    debounce: float = 0.05
    """Seconds changes are gathered before a pass (many reservations, one pass)."""

    @classmethod
    def from_settings(cls, settings: QuotaSettings) -> QuotaSyncConfig:
        """The configured ``[quota]`` section (``broker.settings.QuotaSettings``)."""
        return cls(headroom=dict(settings.headroom), drift_grace=settings.drift_grace)


class QuotaMetrics:
    """Bounded labels only: the resource class (ten values), never a tenant or site."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.drift = Gauge(
            "meridian_quota_drift",
            "Sum over tenants and sites of |reported - committed| usage, by resource class",
            ["resource"],
            registry=self.registry,
        )
        self.drift_events = Counter(
            "meridian_quota_drift_events",
            "Drift recorded into the ledger, by resource class",
            ["resource"],
            registry=self.registry,
        )
        self.pushes = Counter(
            "meridian_quota_site_pushes", "Per-site quota objects written", registry=self.registry
        )


@dataclass(slots=True)
class _Pending:
    since: float
    adjust: dict[str, int]


class QuotaSyncController:
    def __init__(
        self,
        store: p.Store,
        settings: BrokerSettings,
        fence: int,
        *,
        config: QuotaSyncConfig | None = None,
        metrics: QuotaMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings
        self.fence = fence
        self.config = config or QuotaSyncConfig.from_settings(settings.quota)
        self.metrics = metrics or QuotaMetrics()
        self.clock = clock
        self.quotas: dict[str, TenantQuota] = {}
        self.classes: dict[str, dict[str, int]] = {}
        self.accounts: dict[str, tuple[Account, int]] = {}  # tenant -> (account, mod)
        self.reported: dict[str, dict[str, dict[str, int]]] = {}  # site -> tenant -> counts
        self.sites: dict[str, str] = {}  # site -> region
        self.pushed: dict[tuple[str, str], tuple[dict[str, int], int, int]] = {}
        """(site, tenant) -> (limits, generation, mod revision) of the desired object."""
        self.pending: dict[tuple[str, str], _Pending] = {}
        self.drifts: dict[tuple[str, str], dict[str, int]] = {}  # (tenant, site) -> amounts
        self._keys: set[str] = set()  # every key absorbed (a re-listing forgets the rest)

    async def run(self) -> None:
        """Push and reconcile until cancelled (the replica stops leading)."""
        queue: asyncio.Queue[follow.Item] = asyncio.Queue()
        pumps = [asyncio.create_task(self._pump(x, queue)) for x in PREFIXES]
        try:
            await self._listed(queue)
            dirty = self.tenants()
            while True:
                try:
                    await self.process(dirty)
                except errors.StoreUnavailable as exc:
                    log.warning("quota sync pass failed (%s); retrying", exc)
                    await asyncio.sleep(follow.RELIST.first)
                    dirty |= self._take(queue)
                    continue
                dirty = await self._gather(queue)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    # -- state ----------------------------------------------------------------------

    async def load(self) -> int:
        """Read everything this controller looks at (one pass, without following)."""
        revision = 0
        for prefix in PREFIXES:
            kvs, revision = await self.store.get_prefix(prefix)
            for kv in kvs:
                self._absorb(kv.key, kv.value, kv.mod_revision)
        await self._load_pushed()
        return revision

    async def _load_pushed(self) -> None:
        """What was pushed to each site (its generation), so passes write only changes.
        One paged listing of ``desired/``, not a read per site: a new leader of 10,000
        sites sent 10,000 reads here, in the middle of a herd."""
        self.pushed = {}
        objs, _ = await self.store.get_prefix(keys.DESIRED)
        for kv in objs:
            site, kind, tenant = keys.split_object(kv.key)
            if kind == KIND and site in self.sites:
                value = objects.Desired.decode(kv.value)
                pushed = value.spec.get("limits", {})
                self.pushed[(site, tenant)] = (
                    {str(k): int(v) for k, v in pushed.items()},
                    value.generation,
                    kv.mod_revision,
                )

    def _absorb(self, key: str, value: bytes, mod: int) -> set[str]:
        """Take one changed key into the state; returns the tenants it affects."""
        deleted = not value
        if deleted:
            self._keys.discard(key)
        else:
            self._keys.add(key)
        if key.startswith(keys.QUOTA + "limits/"):
            tenant = key.rsplit("/", 1)[-1]
            if deleted:
                self.quotas.pop(tenant, None)
            else:
                self.quotas[tenant] = TenantQuota.parse(from_json(value, key))
            return {tenant}
        if key.startswith(keys.QUOTA + "classes/"):
            name = key.rsplit("/", 1)[-1]
            if deleted:
                self.classes.pop(name, None)
            else:
                self.classes[name] = limits(from_json(value, key).get("limits", {}), key)
            return {t for t in self.tenants() if self._class_of(t) == name}
        if key.startswith(keys.QUOTA + "ledger/"):
            tenant = key.rsplit("/", 1)[-1]
            if deleted:
                self.accounts.pop(tenant, None)
            else:
                self.accounts[tenant] = (Account.parse(from_json(value, key)), mod)
            return {tenant}
        if key.startswith(keys.USAGE):
            site = keys.name_in(keys.USAGE, key)
            old = self.reported.pop(site, {})
            if not deleted:
                self.reported[site] = _usage(value)
            return set(old) | set(self.reported.get(site, {}))
        if key.startswith(keys.SITES):
            site = keys.name_in(keys.SITES, key)
            if deleted:
                self.sites.pop(site, None)
            else:
                self.sites[site] = str(json.loads(value).get("region", ""))
            return self.tenants()
        return set()

    def tenants(self) -> set[str]:
        found = set(self.quotas) | set(self.accounts)
        for projects in self.reported.values():
            found |= set(projects)
        return found

    def _class_of(self, tenant: str) -> str:
        quota = self.quotas.get(tenant)
        return quota.quota_class if quota is not None else DEFAULT_CLASS

    def effective(self, tenant: str) -> EffectiveLimits:
        quota = self.quotas.get(tenant, TenantQuota())
        return EffectiveLimits.resolve(quota, self.classes.get(quota.quota_class))

    def reported_for(self, tenant: str) -> dict[str, dict[str, int]]:
        return {s: projects[tenant] for s, projects in self.reported.items() if tenant in projects}

    # -- the loop -------------------------------------------------------------------

    async def _pump(self, prefix: str, queue: asyncio.Queue[follow.Item]) -> None:
        async for item in follow.follow(self.store, prefix):
            queue.put_nowait(item)

    async def _listed(self, queue: asyncio.Queue[follow.Item]) -> None:
        """Absorb until every prefix was listed once, then read what was pushed: no pass
        runs on half the state (it would push wrong limits)."""
        waiting = set(PREFIXES)
        while waiting:
            item = await queue.get()
            self._take_one(item)
            if isinstance(item, follow.Listed):
                waiting.discard(item.prefix)
        while True:
            try:
                await self._load_pushed()
                return
            except errors.StoreUnavailable as exc:
                log.warning("quota sync: pushed objects not read (%s); retrying", exc)
                await asyncio.sleep(follow.RELIST.first)

    def _take_one(self, item: follow.Item) -> set[str]:
        if isinstance(item, follow.Listed):
            dirty: set[str] = set()
            for key in follow.forgotten(item, self._keys):
                dirty |= self._absorb(key, b"", item.revision)
            return dirty
        key, value = follow.change(item)
        return self._absorb(key, value, item.mod_revision)

    def _take(self, queue: asyncio.Queue[follow.Item]) -> set[str]:
        dirty: set[str] = set()
        while not queue.empty():
            dirty |= self._take_one(queue.get_nowait())
        return dirty

    async def _gather(self, queue: asyncio.Queue[follow.Item]) -> set[str]:
        """Wait for changes (or the next drift due), then take everything queued."""
        timeout = None
        if self.pending:
            due = min(x.since for x in self.pending.values()) + self.config.drift_grace
            timeout = max(0.0, due - self.clock()) + 0.01
        try:
            first = await asyncio.wait_for(queue.get(), timeout)
        except TimeoutError:
            return {tenant for tenant, _ in self.pending}
        await asyncio.sleep(self.config.debounce)
        dirty = self._take_one(first) | self._take(queue)
        return dirty | {tenant for tenant, _ in self.pending}

    async def process(self, tenants: set[str]) -> None:
        """Push and reconcile for ``tenants`` (a pass over the current state)."""
        for tenant in sorted(tenants):
            await self.reconcile(tenant)
            await self.push(tenant)
        self._export()

    # -- push -----------------------------------------------------------------------

    async def push(self, tenant: str) -> None:
        account = self.accounts.get(tenant, (Account(), 0))[0]
        if tenant not in self.quotas and not any(a.used for a in account.sites.values()):
            # only reported somewhere (its ledger holds at most drift adjustments): a
            # project Meridian does not manage keeps the site's own quota
            return
        limits_ = self.effective(tenant)
        reported = self.reported_for(tenant)
        for site in sorted(self.sites):
            want = sync.site_limits(
                limits_, account, reported, self.sites, site, self.config.headroom
            )
            have = self.pushed.get((site, tenant))
            if have is not None and have[0] == want:
                continue
            await self._write_desired(site, tenant, want, have)

    async def _write_desired(
        self,
        site: str,
        tenant: str,
        want: dict[str, int],
        have: tuple[dict[str, int], int, int] | None,
    ) -> None:
        key = keys.desired(site, KIND, tenant)
        spec = {"project": tenant, "limits": want}
        # the stored envelope the next one follows (generation 0: none yet)
        stored, mod = objects.Desired(0), 0
        if have is not None:
            stored, mod = objects.Desired(have[1]), have[2]
        for _ in range(3):
            value = stored.revise(spec)
            result = await fencing.fenced_txn(
                self.store,
                self.fence,
                [p.Put(key, value.encode())],
                [p.Compare(key, p.Target.MOD, p.Op.EQUAL, mod)],
                [p.Get(key)],
            )
            if result.succeeded:
                self.pushed[(site, tenant)] = (want, value.generation, result.revision)
                self.metrics.pushes.inc()
                return
            found = result.responses[0]
            if not found:
                stored, mod = objects.Desired(0), 0
                continue
            stored, mod = objects.Desired.decode(found[0].value), found[0].mod_revision
        raise errors.Conflict(f"desired quota of {tenant} at {site} keeps changing")

    # -- reconcile ------------------------------------------------------------------

    async def reconcile(self, tenant: str) -> None:
        account, ledger_mod = self.accounts.get(tenant, (Account(), 0))
        reported = self.reported_for(tenant)
        # only sites whose agent reports usage at all can drift (silence is not zero)
        where = (set(reported) | {s for s in account.sites if s}) & set(self.reported)
        # and only in the classes a site's report counts (invariant 12)
        counted = {s: sync.reported_classes(self.reported[s]) for s in where}
        drifts = sync.drift(account, reported, counted)
        now = self.clock()
        for site in sorted(where):
            current = {
                c: n
                for c, n in (account.sites[site].adjust.items() if site in account.sites else ())
            }
            wanted = sync.adjustment(drifts, site)
            self.drifts[(tenant, site)] = {c: abs(n) for c, n in wanted.items()}
            if wanted == current:
                self.pending.pop((tenant, site), None)
                continue
            pending = self.pending.setdefault((tenant, site), _Pending(now, wanted))
            pending.adjust = wanted
            if now - pending.since < self.config.drift_grace:
                continue
            # bounded per record: a site's report moves the ledger a step at a time
            recorded = sync.step(current, wanted)
            if await self._record(tenant, site, account, ledger_mod, recorded, drifts):
                self.pending.pop((tenant, site), None)

    async def _record(
        self,
        tenant: str,
        site: str,
        account: Account,
        ledger_mod: int,
        recorded: dict[str, int],
        drifts: list[sync.Drift],
    ) -> bool:
        """Write the adjustment and its event in one fenced txn; False if raced."""
        seq_key = keys.QUOTA + layout.seq_key(tenant)
        ledger_key = keys.QUOTA + layout.ledger_key(tenant)
        details = (
            ", ".join(
                f"{d.resource} reported {d.reported} vs committed {d.committed} ({d.amount:+d})"
                for d in drifts
                if d.site == site
            )
            or "drift cleared"
        )
        if recorded != sync.adjustment(drifts, site):
            details += f" (adjustment {recorded} this record: bounded per record)"
        ev = event.new("quota.drift", tenant, f"site {site}: {details}", replica=self.settings.name)
        new = account.with_adjust(site, recorded)
        try:
            await fencing.fenced_txn(
                self.store,
                self.fence,
                [
                    p.Put(ledger_key, to_json(new.dump())),
                    p.Put(seq_key, b""),
                    p.Put(keys.event(ev.id), codec.encode(ev)),
                ],
                # the ledger's revision proves the account is current; seq is rewritten
                # (not compared) so replicas' caches re-read, and reservations never
                # starve this write
                [p.Compare(ledger_key, p.Target.MOD, p.Op.EQUAL, ledger_mod)],
            )
        except errors.Conflict:
            log.info("quota drift of %s at %s raced a reservation; retrying", tenant, site)
            return False
        log.warning("quota drift recorded for %s at %s: %s", tenant, site, details)
        for d in drifts:
            if d.site == site:
                self.metrics.drift_events.labels(d.resource).inc()
        return True

    def _export(self) -> None:
        totals = dict.fromkeys(RESOURCE_CLASSES, 0)
        for amounts in self.drifts.values():
            for cls, n in amounts.items():
                totals[cls] += n
        for cls, n in totals.items():
            self.metrics.drift.labels(cls).set(n)


def _usage(value: bytes) -> dict[str, dict[str, int]]:
    try:
        projects = json.loads(value)
    except ValueError:
        return {}
    out: dict[str, dict[str, int]] = {}
    if not isinstance(projects, dict):
        return out
    for project, amounts in projects.items():
        if isinstance(amounts, dict):
            counts = {c: int(n) for c, n in amounts.items() if c in RESOURCE_CLASSES and n}
            if counts:
                out[str(project)] = counts
    return out


@registry.controller("quota sync")
def _start(ctx: registry.Context) -> QuotaSyncController:
    return QuotaSyncController(
        ctx.store, ctx.settings, ctx.fence, metrics=ctx.quota_metrics
    )
