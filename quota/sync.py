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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from quota.models import RESOURCE_CLASSES, UNLIMITED, Account, Counts, EffectiveLimits


def site_usage(account: Account, reported: Mapping[str, Counts], site: str) -> dict[str, int]:
    """What the tenant uses at ``site``: max(committed + adjustment, reported) per class."""
    entry = account.sites.get(site)
    got = reported.get(site, {})
    out: dict[str, int] = {}
    for cls in RESOURCE_CLASSES:
        committed = entry.used.get(cls, 0) if entry is not None else 0
        n = max(committed, got.get(cls, 0))
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


def drift(account: Account, reported: Mapping[str, Counts], sites: Iterable[str]) -> list[Drift]:
    """Every (site, class) where the report differs from the ledger's committed usage."""
    found: list[Drift] = []
    for site in sorted(set(sites)):
        if not site:
            continue
        entry = account.sites.get(site)
        got = reported.get(site, {})
        for cls in RESOURCE_CLASSES:
            committed = entry.used.get(cls, 0) if entry is not None else 0
            if got.get(cls, 0) != committed:
                found.append(Drift(site, cls, committed, got.get(cls, 0)))
    return found


def adjustment(drifts: Iterable[Drift], site: str) -> dict[str, int]:
    """The adjustment the ledger should hold at ``site`` for ``drifts``."""
    return {d.resource: d.amount for d in drifts if d.site == site and d.amount}
