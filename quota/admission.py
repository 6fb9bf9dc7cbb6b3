"""Admission: does a reservation fit, given limits, committed usage and live holds?

Invariant 7 (no oversubscription) is decided here and made atomic by the ledger: a
request is admitted only if, for every class it asks more of, committed usage plus every
live reservation plus the request stays within the limit — globally, in the request's
region and at its site where limits are set there. Negative amounts (deletions) are never
refused and free nothing until committed. A limit below current usage is legal: it is
reported as over limit, and every request for more of that class is refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from quota import errors
from quota.models import (
    RESOURCE_CLASSES,
    UNLIMITED,
    Account,
    Counts,
    EffectiveLimits,
    Hold,
    TenantId,
    reserved,
)


@dataclass(frozen=True, slots=True)
class Scope:
    """One level limits apply at: global, a region or a site."""

    kind: str  # "global" | "region" | "site"
    name: str = ""

    def __str__(self) -> str:
        return self.kind if self.kind == "global" else f"{self.kind} {self.name}"


def _scopes(limits: EffectiveLimits, site: str, region: str) -> list[tuple[Scope, Counts]]:
    found: list[tuple[Scope, Counts]] = [(Scope("global"), limits.global_)]
    if region and region in limits.regions:
        found.append((Scope("region", region), limits.regions[region]))
    if site and site in limits.sites:
        found.append((Scope("site", site), limits.sites[site]))
    return found


def _used(account: Account, cls: str, scope: Scope) -> int:
    if scope.kind == "site":
        return account.used(cls, site=scope.name)
    if scope.kind == "region":
        return account.used(cls, region=scope.name)
    return account.used(cls)


class Reserved:
    """Running totals of what live holds take, globally, per site and per region.

    Kept incrementally by the ledger so admission costs O(classes), not O(live holds),
    however many reservations a hot tenant has open.
    """

    def __init__(self, holds: Iterable[Hold] = ()) -> None:
        self.total: Counter[str] = Counter()
        self.sites: dict[str, Counter[str]] = {}
        self.regions: dict[str, Counter[str]] = {}
        for hold in holds:
            self.add(hold)

    def add(self, hold: Hold, sign: int = 1) -> None:
        amounts = {c: sign * n for c, n in hold.positive().items()}
        self.total.update(amounts)
        if hold.site:
            self.sites.setdefault(hold.site, Counter()).update(amounts)
        if hold.region:
            self.regions.setdefault(hold.region, Counter()).update(amounts)

    def remove(self, hold: Hold) -> None:
        self.add(hold, -1)

    def copy(self) -> Reserved:
        found = Reserved()
        found.total = Counter(self.total)
        found.sites = {k: Counter(v) for k, v in self.sites.items()}
        found.regions = {k: Counter(v) for k, v in self.regions.items()}
        return found

    def of(self, scope: Scope) -> Mapping[str, int]:
        if scope.kind == "site":
            return self.sites.get(scope.name, Counter())
        if scope.kind == "region":
            return self.regions.get(scope.name, Counter())
        return self.total


def check(
    tenant: TenantId,
    limits: EffectiveLimits,
    account: Account,
    holds: Iterable[Hold] | Reserved,
    deltas: Counts,
    *,
    site: str = "",
    region: str = "",
) -> None:
    """Raise ``QuotaExceeded`` for the first class and scope ``deltas`` would overrun."""
    wanted = {c: n for c, n in deltas.items() if n > 0}
    if not wanted:
        return
    totals = holds if isinstance(holds, Reserved) else Reserved(holds)
    for scope, scoped in _scopes(limits, site, region):
        held = totals.of(scope)
        for cls in RESOURCE_CLASSES:
            amount = wanted.get(cls, 0)
            limit = scoped.get(cls, UNLIMITED)
            if amount == 0 or limit == UNLIMITED:
                continue
            used = _used(account, cls, scope)
            taken = held.get(cls, 0)
            if used + taken + amount > limit:
                raise errors.QuotaExceeded(
                    tenant=tenant,
                    resource=cls,
                    requested=amount,
                    left=max(0, limit - used - taken),
                    limit=limit,
                    used=used,
                    reserved=taken,
                    scope=str(scope),
                )


@dataclass(frozen=True, slots=True)
class Line:
    """One class of a tenant's usage report."""

    resource: str
    limit: int
    used: int
    reserved: int

    @property
    def left(self) -> int | None:
        if self.limit == UNLIMITED:
            return None
        return max(0, self.limit - self.used - self.reserved)

    @property
    def over_limit(self) -> bool:
        return self.limit != UNLIMITED and self.used > self.limit


def report(
    limits: EffectiveLimits, account: Account, holds: Iterable[Hold]
) -> list[Line]:
    """Every class: limit, committed (effective) usage, reserved, what is left, over-limit."""
    held = reserved(holds)
    return [
        Line(cls, limits.global_.get(cls, UNLIMITED), account.used(cls), held.get(cls, 0))
        for cls in RESOURCE_CLASSES
    ]


def per_site(account: Account, holds: Iterable[Hold]) -> dict[str, dict[str, dict[str, int]]]:
    """``{site: {"used": {...}, "reserved": {...}}}`` ("" = not placed at a site yet)."""
    holds = list(holds)
    out: dict[str, dict[str, dict[str, int]]] = {}
    for site, entry in account.sites.items():
        used = {c: n for c in RESOURCE_CLASSES if (n := entry.effective(c))}
        out[site] = {"used": used, "reserved": {}}
    for hold in holds:
        slot = out.setdefault(hold.site, {"used": {}, "reserved": {}})
        for cls, n in hold.positive().items():
            slot["reserved"][cls] = slot["reserved"].get(cls, 0) + n
    return out


def sum_counts(items: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for counts in items:
        for cls, n in counts.items():
            total[cls] = total.get(cls, 0) + n
    return total
