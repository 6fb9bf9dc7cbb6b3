"""Per-site quota push and usage reconciliation: the pure arithmetic.

Invariant 7 reaches into each site through here. A site's own quota sets (Nova, Neutron,
Cinder) are set to what the tenant may still use *there*: its global limit minus what it
uses at every other site (plus a configurable headroom), capped by any region or site
limit. So even a resource created directly at a site, behind the broker's back, cannot
take the tenant past its global remainder. Usage at a site is the larger of what the
ledger committed there and what the site's agent reports, so an out-of-band creation
shrinks every other site's limit as soon as it is reported.

Reconciliation compares what agents report with what the ledger committed per site; a
difference is drift, recorded in the ledger as an adjustment once it has lasted
``grace`` seconds (so a commit racing its first usage report is not drift).

Invariant 12 (what a site does not report is unknown, never zero): drift is computed
only for the classes a site's report counts — those it gives an amount for, for any
project (``reported_classes``). A sim site that counts no pinned cores never turns a
VNF's committed pinned cores into "0 in use". And one record moves an adjustment by at
most ``DRIFT_STEP`` per class (``step``), so a site reporting nonsense — for any tenant
it names — shifts that tenant's usage, and every other site's share of it, by a bounded
amount per record, not without bound.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from quota.models import DEFAULTS, RESOURCE_CLASSES, UNLIMITED, Account, Counts, EffectiveLimits

DRIFT_STEP: Mapping[str, int] = DEFAULTS
"""How far one record may move a tenant's adjustment at one site, per class: a default
tenant's whole quota of it (drift beyond that is recorded over several records)."""


def site_usage(
    account: Account, reported: Mapping[str, Counts], site: str, step: Counts = DRIFT_STEP
) -> dict[str, int]:
    """What the tenant uses at ``site``: max(committed, reported) per class, where the
    report counts for at most ``step`` beyond what the ledger has (committed plus the
    drift recorded so far), so one report cannot take a tenant's other shares away."""
    entry = account.sites.get(site)
    got = reported.get(site, {})
    out: dict[str, int] = {}
    for cls in RESOURCE_CLASSES:
        committed = entry.used.get(cls, 0) if entry is not None else 0
        known = max(committed, entry.effective(cls)) if entry is not None else 0
        n = max(committed, min(got.get(cls, 0), known + step.get(cls, 1)))
        if n:
            out[cls] = n
    return out


def site_limits(
    limits: EffectiveLimits,
    account: Account,
    reported: Mapping[str, Counts],
    sites: Mapping[str, str],
    site: str,
    headroom: Counts | None = None,
) -> dict[str, int]:
    """The quota to push to ``site`` (``UNLIMITED`` stays unlimited).

    ``sites`` maps every site the tenant may use to its region; ``reported`` is each
    site's reported usage of this tenant. Never negative: a site whose share is gone
    gets 0 (nothing new), even if it already uses more.
    """
    headroom = headroom or {}
    where = set(sites) | set(reported) | {s for s in account.sites if s}
    usage = {s: site_usage(account, reported, s) for s in where}
    unplaced: dict[str, int] = {}
    if "" in account.sites:  # committed without a site: counts against every site
        unplaced = {c: account.sites[""].effective(c) for c in RESOURCE_CLASSES}
    region = sites.get(site, "")
    out: dict[str, int] = {}
    for cls in RESOURCE_CLASSES:
        candidates: list[int] = []
        limit = limits.global_.get(cls, UNLIMITED)
        if limit != UNLIMITED:
            others = sum(u.get(cls, 0) for s, u in usage.items() if s != site)
            candidates.append(limit - others - unplaced.get(cls, 0) + headroom.get(cls, 0))
        if region and cls in limits.regions.get(region, {}):
            limit = limits.regions[region][cls]
            if limit != UNLIMITED:
                others = sum(
                    u.get(cls, 0)
                    for s, u in usage.items()
                    if s != site and sites.get(s, _region_of(account, s)) == region
                )
                candidates.append(limit - others + headroom.get(cls, 0))
        if cls in limits.sites.get(site, {}) and limits.sites[site][cls] != UNLIMITED:
            candidates.append(limits.sites[site][cls] + headroom.get(cls, 0))
        out[cls] = max(0, min(candidates)) if candidates else UNLIMITED
    return out


def _region_of(account: Account, site: str) -> str:
    entry = account.sites.get(site)
    return entry.region if entry is not None else ""


@dataclass(frozen=True, slots=True)
class Drift:
    """At ``site``, the agent reports ``reported`` of ``resource`` where the ledger has
    ``committed`` (positive ``amount``: created out of band; negative: deleted)."""

    site: str
    resource: str
    committed: int
    reported: int

    @property
    def amount(self) -> int:
        return self.reported - self.committed


def reported_classes(report: Mapping[str, Counts]) -> frozenset[str]:
    """The classes a site's whole report (project -> class -> amount) counts: those it
    gives an amount for. A class it never mentions is unknown there, not zero."""
    return frozenset(c for amounts in report.values() for c, n in amounts.items() if n)


def drift(
    account: Account, reported: Mapping[str, Counts], counted: Mapping[str, Collection[str]]
) -> list[Drift]:
    """Every (site, class) where the report differs from the ledger's committed usage,
    over the classes each site's report counts (``counted``: site -> classes)."""
    found: list[Drift] = []
    for site in sorted(counted):
        if not site:
            continue
        entry = account.sites.get(site)
        got = reported.get(site, {})
        for cls in RESOURCE_CLASSES:
            if cls not in counted[site]:
                continue
            committed = entry.used.get(cls, 0) if entry is not None else 0
            if got.get(cls, 0) != committed:
                found.append(Drift(site, cls, committed, got.get(cls, 0)))
    return found


def adjustment(drifts: Iterable[Drift], site: str) -> dict[str, int]:
    """The adjustment the ledger should hold at ``site`` for ``drifts``."""
    return {d.resource: d.amount for d in drifts if d.site == site and d.amount}


def step(current: Counts, wanted: Counts, bound: Counts = DRIFT_STEP) -> dict[str, int]:
    """The adjustment after one record: from ``current`` toward ``wanted`` by at most
    ``bound`` per class (a class without a bound moves by at most 1)."""
    out: dict[str, int] = {}
    for cls in set(current) | set(wanted):
        have, want = current.get(cls, 0), wanted.get(cls, 0)
        limit = max(1, bound.get(cls, 1))
        moved = have + max(-limit, min(limit, want - have))
        if moved:
            out[cls] = moved
    return out
