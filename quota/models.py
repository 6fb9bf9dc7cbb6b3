"""Quota values: resource classes, limits, a tenant's account, reservations.

Everything here is a frozen value with a validating constructor from JSON-shaped data
(``*.parse``) and a JSON-shaped ``dump``. Validation is the first line of invariant 7
(no oversubscription): a limit that is negative (other than ``UNLIMITED``), absurd,
of an unknown class, or a tenant id that could escape its key is refused with the dotted
path of the field, so nothing malformed ever reaches the ledger.

Tenants are Keystone project ids. Effective limits are layered: built-in ``DEFAULTS``,
then a named quota class (``default`` unless the tenant names another), then the tenant's
own global limits; region and site limits come only from the tenant and apply on top.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NewType

from quota import errors

TenantId = NewType("TenantId", str)
ReservationId = NewType("ReservationId", str)
Counts = Mapping[str, int]

RESOURCE_CLASSES: tuple[str, ...] = (
    "instances",
    "cores",
    "ram_mb",
    "ports",
    "floating_ips",
    "volumes",
    "gigabytes",
    "sriov_vfs",
    "hugepages_mb",
    "pinned_cores",
)
UNLIMITED = -1
MAX_LIMIT = 1_000_000_000
"""Anything above this is a typo, not a quota (a billion cores, a petabyte of RAM)."""
MAX_DELTA = MAX_LIMIT

DEFAULTS: Mapping[str, int] = {
    "instances": 10,
    "cores": 20,
    "ram_mb": 51_200,
    "ports": 500,
    "floating_ips": 50,
    "volumes": 10,
    "gigabytes": 1_000,
    "sriov_vfs": 8,
    "hugepages_mb": 16_384,
    "pinned_cores": 16,
}
"""What a tenant may use when neither a quota class nor the tenant says otherwise
(Nova/Neutron/Cinder's own defaults, and small ones for the NFV classes)."""

DEFAULT_CLASS = "default"

# Keystone keeps project ids in a String(64) column; generated ones are uuid4 hex.
_TENANT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_RESERVATION = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def tenant_id(value: object, field_name: str = "tenant") -> TenantId:
    if not isinstance(value, str) or not _TENANT.fullmatch(value):
        raise errors.InvalidQuota(
            field_name,
            f"{value!r} is not a Keystone project id (1-64 of A-Z, a-z, 0-9, '_', '-')",
        )
    return TenantId(value)


def name(value: object, field_name: str) -> str:
    """A quota class, region or site name: a lowercase DNS label."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise errors.InvalidQuota(field_name, f"{value!r} is not a lowercase DNS label")
    return value


BROKER_NAMESPACE = "vnf."
"""Reservation ids the broker's own controllers hold for the tenant (the VNF controller's
``vnf.<id>``, its retries and its ``.undo``). Only the broker creates, renews, commits or
releases them, in-process: a tenant that could release the hold of a PLACED VNF would
run it outside its quota (invariant 7), so the API refuses every id in this namespace."""


def broker_owned(rid: str) -> bool:
    """Whether ``rid`` names a hold of the broker's controllers (``BROKER_NAMESPACE``)."""
    return rid.startswith(BROKER_NAMESPACE)


def reservation_id(value: object, field_name: str = "idempotency_key") -> ReservationId:
    if not isinstance(value, str) or not _RESERVATION.fullmatch(value):
        raise errors.InvalidQuota(
            field_name, f"{value!r} must be 1-128 of A-Z, a-z, 0-9, '.', '_', ':', '-'"
        )
    return ReservationId(value)


def _int(value: object, field_name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise errors.InvalidQuota(field_name, f"{value!r} is not an integer")
    return value


def limits(data: object, field_name: str = "limits") -> dict[str, int]:
    """Validated ``{class: limit}``: known classes, -1 (unlimited) or 0..MAX_LIMIT."""
    if not isinstance(data, Mapping):
        raise errors.InvalidQuota(field_name, "must be an object of resource class -> limit")
    out: dict[str, int] = {}
    for cls, raw in data.items():
        where = f"{field_name}.{cls}"
        if cls not in RESOURCE_CLASSES:
            raise errors.InvalidQuota(
                where, f"unknown resource class; known: {', '.join(RESOURCE_CLASSES)}"
            )
        value = _int(raw, where)
        if value < UNLIMITED:
            raise errors.InvalidQuota(where, f"{value} is negative (use -1 for unlimited)")
        if value > MAX_LIMIT:
            raise errors.InvalidQuota(where, f"{value} is absurd (at most {MAX_LIMIT})")
        out[cls] = value
    return out


def deltas(data: object, field_name: str = "deltas", *, negative: bool = True) -> dict[str, int]:
    """Validated ``{class: delta}``: known classes, non-zero, |delta| <= MAX_DELTA; with
    ``negative=False`` (a tenant's own request) no amount below zero: quota is given back
    by the broker when what used it is deleted, never by a reservation a tenant makes."""
    if not isinstance(data, Mapping) or not data:
        raise errors.InvalidQuota(field_name, "must be a non-empty object of class -> amount")
    out: dict[str, int] = {}
    for cls, raw in data.items():
        where = f"{field_name}.{cls}"
        if cls not in RESOURCE_CLASSES:
            raise errors.InvalidQuota(
                where, f"unknown resource class; known: {', '.join(RESOURCE_CLASSES)}"
            )
        value = _int(raw, where)
        if abs(value) > MAX_DELTA:
            raise errors.InvalidQuota(where, f"{value} is absurd (at most {MAX_DELTA} either way)")
        if value < 0 and not negative:
            raise errors.InvalidQuota(
                where, f"{value} is negative: quota comes back when what used it is deleted"
            )
        if value:
            out[cls] = value
    if not out:
        raise errors.InvalidQuota(field_name, "every amount is zero: nothing to reserve")
    return out


def _scoped(data: object, field_name: str) -> dict[str, dict[str, int]]:
    if not isinstance(data, Mapping):
        raise errors.InvalidQuota(field_name, "must be an object of name -> limits")
    return {name(k, f"{field_name}.{k}"): limits(v, f"{field_name}.{k}") for k, v in data.items()}


@dataclass(frozen=True, slots=True)
class TenantQuota:
    """What an admin set for one tenant (``PUT /v1/quotas/{tenant}``)."""

    limits: Mapping[str, int] = field(default_factory=dict)
    regions: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    sites: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    quota_class: str = DEFAULT_CLASS

    @classmethod
    def parse(cls, data: object) -> TenantQuota:
        if not isinstance(data, Mapping):
            raise errors.InvalidQuota("body", "must be an object")
        unknown = set(data) - {"limits", "regions", "sites", "quota_class"}
        if unknown:
            raise errors.InvalidQuota(
                sorted(unknown)[0], "unknown field; allowed: limits, regions, sites, quota_class"
            )
        return cls(
            limits=limits(data.get("limits", {})),
            regions=_scoped(data.get("regions", {}), "regions"),
            sites=_scoped(data.get("sites", {}), "sites"),
            quota_class=name(data.get("quota_class", DEFAULT_CLASS), "quota_class"),
        )

    def dump(self) -> dict[str, Any]:
        return {
            "limits": dict(self.limits),
            "regions": {k: dict(v) for k, v in self.regions.items()},
            "sites": {k: dict(v) for k, v in self.sites.items()},
            "quota_class": self.quota_class,
        }


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    """The limits admission checks: every class globally, some per region and site."""

    global_: Mapping[str, int]
    regions: Mapping[str, Mapping[str, int]]
    sites: Mapping[str, Mapping[str, int]]

    @classmethod
    def resolve(cls, quota: TenantQuota, class_limits: Counts | None) -> EffectiveLimits:
        merged = {**DEFAULTS, **(class_limits or {}), **quota.limits}
        return cls(global_=merged, regions=quota.regions, sites=quota.sites)

    def dump(self) -> dict[str, Any]:
        return {
            "limits": dict(self.global_),
            "regions": {k: dict(v) for k, v in self.regions.items()},
            "sites": {k: dict(v) for k, v in self.sites.items()},
        }


@dataclass(frozen=True, slots=True)
class SiteAccount:
    """Committed usage at one site ("" = not placed at a site), and the drift adjustment
    the reconciler recorded there (reported by the agent minus committed)."""

    region: str = ""
    used: Mapping[str, int] = field(default_factory=dict)
    adjust: Mapping[str, int] = field(default_factory=dict)

    def effective(self, cls: str) -> int:
        return max(0, self.used.get(cls, 0) + self.adjust.get(cls, 0))


@dataclass(frozen=True, slots=True)
class Account:
    """A tenant's committed usage, per site (the value of ``ledger/<tenant>``)."""

    sites: Mapping[str, SiteAccount] = field(default_factory=dict)

    def used(self, cls: str, *, site: str | None = None, region: str | None = None) -> int:
        total = 0
        for where, account in self.sites.items():
            if site is not None and where != site:
                continue
            if region is not None and account.region != region:
                continue
            total += account.effective(cls)
        return total

    def totals(self) -> dict[str, int]:
        return {c: n for c in RESOURCE_CLASSES if (n := self.used(c))}

    def apply(self, site: str, region: str, amounts: Counts) -> Account:
        """A new account with ``amounts`` added to ``site`` (never below zero)."""
        old = self.sites.get(site, SiteAccount(region=region))
        used = dict(old.used)
        for cls, n in amounts.items():
            used[cls] = max(0, used.get(cls, 0) + n)
        account = SiteAccount(region=region or old.region, used=_nonzero(used), adjust=old.adjust)
        return Account({**self.sites, site: account})

    def with_adjust(self, site: str, adjust: Counts) -> Account:
        old = self.sites.get(site, SiteAccount())
        account = SiteAccount(region=old.region, used=old.used, adjust=_nonzero(adjust))
        return Account({**self.sites, site: account})

    def dump(self) -> dict[str, Any]:
        return {
            "sites": {
                s: {"region": a.region, "used": dict(a.used), "adjust": dict(a.adjust)}
                for s, a in sorted(self.sites.items())
                if a.used or a.adjust
            }
        }

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Account:
        sites = {
            str(s): SiteAccount(
                region=str(a.get("region", "")),
                used={str(k): int(v) for k, v in a.get("used", {}).items()},
                adjust={str(k): int(v) for k, v in a.get("adjust", {}).items()},
            )
            for s, a in data.get("sites", {}).items()
        }
        return cls(sites)


def _nonzero(counts: Counts) -> dict[str, int]:
    return {k: v for k, v in sorted(counts.items()) if v}


@dataclass(frozen=True, slots=True)
class Hold:
    """A live reservation (``holds/<tenant>/<id>``, attached to an expiring lease)."""

    id: ReservationId
    deltas: Mapping[str, int]
    site: str = ""
    region: str = ""
    expires_ms: int = 0  # wall clock, a hint only: the lease decides
    create_revision: int = 0

    def positive(self) -> dict[str, int]:
        """What the hold takes from the limits: pending deletions free nothing yet."""
        return {c: n for c, n in self.deltas.items() if n > 0}

    def dump(self) -> dict[str, Any]:
        return {
            "deltas": dict(self.deltas),
            "site": self.site,
            "region": self.region,
            "expires_ms": self.expires_ms,
        }

    @classmethod
    def parse(cls, rid: str, data: Mapping[str, Any], create_revision: int) -> Hold:
        return cls(
            id=ReservationId(rid),
            deltas={str(k): int(v) for k, v in data.get("deltas", {}).items()},
            site=str(data.get("site", "")),
            region=str(data.get("region", "")),
            expires_ms=int(data.get("expires_ms", 0)),
            create_revision=create_revision,
        )


@dataclass(frozen=True, slots=True)
class Settled:
    """What became of a reservation (``done/<tenant>/<id>``), kept for idempotent retries."""

    id: ReservationId
    state: str  # "committed" | "released"
    deltas: Mapping[str, int]
    site: str = ""

    def dump(self) -> dict[str, Any]:
        return {"state": self.state, "deltas": dict(self.deltas), "site": self.site}

    @classmethod
    def parse(cls, rid: str, data: Mapping[str, Any]) -> Settled:
        return cls(
            id=ReservationId(rid),
            state=str(data.get("state", "")),
            deltas={str(k): int(v) for k, v in data.get("deltas", {}).items()},
            site=str(data.get("site", "")),
        )


@dataclass(frozen=True, slots=True)
class Reservation:
    """What ``Ledger.reserve`` returns."""

    tenant: TenantId
    id: ReservationId
    deltas: Mapping[str, int]
    site: str
    expires_ms: int
    state: str = "reserved"  # or "committed"/"released" for an idempotent retry
    revision: int = 0


def reserved(
    holds: Iterable[Hold], *, site: str | None = None, region: str | None = None
) -> dict[str, int]:
    """Sum of what ``holds`` take from the limits, optionally within one site or region."""
    total: dict[str, int] = {}
    for hold in holds:
        if site is not None and hold.site != site:
            continue
        if region is not None and hold.region != region:
            continue
        for cls, n in hold.positive().items():
            total[cls] = total.get(cls, 0) + n
    return total


def to_json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def from_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        found = json.loads(data)
    except ValueError as exc:
        raise errors.InvalidQuota(what, f"stored value is not JSON: {exc}") from exc
    if not isinstance(found, dict):
        raise errors.InvalidQuota(what, "stored value is not a JSON object")
    return found
