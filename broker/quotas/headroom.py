"""What placement needs of the global quota ledger: ``Headroom``, and ``LedgerHeadroom``.

Placement asks ``check`` while deciding (a tenant short of quota makes the VNF
infeasible, with the ledger's reason), the VNF controller ``reserve``s before it plans
and commits, ``renew``s while the VNF is PLACED (a reservation expires unless kept),
``commit``s once the VNF is ACTIVE (booking the usage at the sites its members run at),
``release``s when it fails or is deleted before that, and ``uncommit``s when an ACTIVE VNF
is deleted (its usage goes back, per site). ``Unlimited`` is for tests.

Errors are the quota library's own, never translated: a refusal is one of ``REFUSED``
(the ledger's ``QuotaExceeded`` says which class, the request and what is left), anything
else is ``quota.errors.Temporary`` (retry) — the API's problem table maps both.

A VNF's reservation id is ``<tenant>/<ledger reservation id>``, so commit, renew and
release need nothing but the string the VNF record keeps. The ledger id is derived from
the VNF id (``vnf.<id>``), which makes a retried reserve — a new leader placing the same
PENDING VNF — find the same hold instead of taking the quota twice.

Lifetime: a hold rides on a lease of ``ttl`` seconds. The controller calls ``renew`` on
every pass over a PLACED VNF; at most every ``ttl / 3`` seconds that moves the hold to a
fresh lease, so a VNF may stay PLACED for as long as its agents need while a reservation
whose VNF record vanished still ends on its own. If the hold lapsed anyway (no leader for
longer than ``ttl``), renew and commit take it again under the same id — admitted afresh,
so a lapse can never oversubscribe: when the quota is gone by then, they refuse.

Commit books the usage at the sites the members run at (``Ledger.commit(split=...)``), so
the per-site quota push and drift reconciliation see it where it is. Deleting an ACTIVE
VNF gives that usage back with a committed negative reservation (``<id>.undo``).

Invariant 7: everything that adds to a tenant's usage goes through ``Ledger.reserve``,
which admits atomically against the limits; this module never writes usage directly, and
the broker reserves before it writes any desired object.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from broker import errors
from quota import admission
from quota import errors as quota_errors
from quota.ledger import Ledger
from quota.models import ReservationId, TenantId, reservation_id, tenant_id

log = logging.getLogger(__name__)

REFUSED = (
    quota_errors.QuotaExceeded,
    quota_errors.InvalidQuota,
    quota_errors.ReservationConflict,
)
"""What a refusal of the ledger is (the VNF fails with it); every other ``QuotaError`` is
temporary."""

@dataclass(frozen=True, slots=True)
class SiteUsage:
    """What a VNF's members at one site charge to the quota there."""

    region: str
    amounts: Mapping[str, int]


class Headroom(Protocol):
    async def check(self, tenant: str, deltas: Mapping[str, int]) -> str | None:
        """None when ``deltas`` fit the tenant's quota now, else what is short."""
        ...

    async def reserve(self, tenant: str, deltas: Mapping[str, int], key: str) -> str:
        """Reserve ``deltas``; returns a reservation id. Idempotent per ``key``.

        Raises one of ``REFUSED`` when they do not fit.
        """
        ...

    async def renew(self, reservation: str, deltas: Mapping[str, int]) -> None:
        """Keep the reservation alive a while longer (call it while the VNF is PLACED).

        Raises one of ``REFUSED`` when it lapsed and ``deltas`` no longer fit.
        """
        ...

    async def commit(self, reservation: str, at: Mapping[str, SiteUsage]) -> None:
        """Turn the reservation into usage at the sites of ``at`` (they add up to it).

        Raises one of ``REFUSED`` when it lapsed and no longer fits.
        """
        ...

    async def release(self, reservation: str) -> None: ...

    async def uncommit(self, reservation: str, at: Mapping[str, SiteUsage]) -> None:
        """Give back what ``commit(reservation, at)`` booked (the VNF is gone)."""
        ...


class Unlimited:
    """Every tenant has infinite headroom; keeps a log for tests."""

    def __init__(self) -> None:
        self.reserved: dict[str, dict[str, int]] = {}
        self.committed: set[str] = set()
        self.released: set[str] = set()
        self.uncommitted: set[str] = set()
        self.renewed: dict[str, int] = {}

    async def check(self, tenant: str, deltas: Mapping[str, int]) -> str | None:
        return None

    async def reserve(self, tenant: str, deltas: Mapping[str, int], key: str) -> str:
        self.reserved[key] = dict(deltas)
        return key

    async def renew(self, reservation: str, deltas: Mapping[str, int]) -> None:
        self.renewed[reservation] = self.renewed.get(reservation, 0) + 1

    async def commit(self, reservation: str, at: Mapping[str, SiteUsage]) -> None:
        self.committed.add(reservation)

    async def release(self, reservation: str) -> None:
        self.released.add(reservation)
        self.reserved.pop(reservation, None)

    async def uncommit(self, reservation: str, at: Mapping[str, SiteUsage]) -> None:
        self.uncommitted.add(reservation)


DEFAULT_TTL = 300
PREFIX = "vnf."
UNDO = ".undo"
_RETRIES = (".2", ".3", ".4")
"""Id suffixes tried when the VNF's reservation was already released (a FAILED write
that did not land); each one is a fresh, fully admitted reservation."""


class LedgerHeadroom:
    """The ``Headroom`` the running broker uses: one replica's ``Ledger``."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        ttl: int = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.ttl = ttl
        self.renew_every = ttl / 3
        self._clock = clock
        self._kept: dict[str, float] = {}
        """reservation → when it was last reserved or renewed (this replica's clock)."""

    # -- ids ------------------------------------------------------------------------

    @staticmethod
    def split_id(reservation: str) -> tuple[TenantId, ReservationId]:
        tenant, sep, rid = reservation.partition("/")
        if not sep:
            raise errors.InvalidInput("reservation", f"{reservation!r} is not <tenant>/<id>")
        return TenantId(tenant), ReservationId(rid)

    # -- Headroom -------------------------------------------------------------------

    async def check(self, tenant: str, deltas: Mapping[str, int]) -> str | None:
        """What is short right now (the ledger's refusal, naming class, request, left)."""
        try:
            tid = tenant_id(tenant)
            view = await self.ledger.view(tid)
            admission.check(tid, view.limits, view.account, view.reserved, deltas)
        except (quota_errors.QuotaExceeded, quota_errors.InvalidQuota) as exc:
            return str(exc)
        return None

    async def reserve(self, tenant: str, deltas: Mapping[str, int], key: str) -> str:
        tid = tenant_id(tenant)
        base = reservation_id(PREFIX + key)
        for suffix in ("", *_RETRIES):
            found = await self.ledger.reserve(
                tid, dict(deltas), self.ttl, idempotency_key=base + suffix
            )
            if found.state != "released":
                break
        else:
            raise quota_errors.ReservationConflict(
                tid, base, f"released {len(_RETRIES) + 1} times"
            )
        reservation = f"{tid}/{found.id}"
        self._kept[reservation] = self._clock()
        return reservation

    async def renew(self, reservation: str, deltas: Mapping[str, int]) -> None:
        if self._clock() - self._kept.get(reservation, -math.inf) < self.renew_every:
            return
        tid, rid = self.split_id(reservation)
        try:
            await self.ledger.renew(tid, rid, self.ttl)
        except quota_errors.ReservationExpired:
            log.warning("reservation %s lapsed while its VNF was PLACED: taking it again",
                        reservation)
            await self.ledger.reserve(tid, dict(deltas), self.ttl, idempotency_key=rid)
        except quota_errors.ReservationConflict as exc:
            log.info("reservation %s is already settled: %s", reservation, exc)
        self._kept[reservation] = self._clock()

    async def commit(self, reservation: str, at: Mapping[str, SiteUsage]) -> None:
        tid, rid = self.split_id(reservation)
        split = {site: (u.region, dict(u.amounts)) for site, u in at.items()}
        try:
            await self.ledger.commit(tid, rid, split=split)
        except quota_errors.ReservationExpired:
            log.warning("reservation %s lapsed before commit: taking it again", reservation)
            await self.ledger.reserve(tid, _total(at), self.ttl, idempotency_key=rid)
            await self.ledger.commit(tid, rid, split=split)
        self._kept.pop(reservation, None)

    async def release(self, reservation: str) -> None:
        tid, rid = self.split_id(reservation)
        try:
            await self.ledger.release(tid, rid)
        except quota_errors.ReservationConflict as exc:
            log.warning("release of %s: %s", reservation, exc)
        self._kept.pop(reservation, None)

    async def uncommit(self, reservation: str, at: Mapping[str, SiteUsage]) -> None:
        tid, rid = self.split_id(reservation)
        undo = ReservationId(rid + UNDO)
        back = {site: (u.region, {c: -n for c, n in u.amounts.items()}) for site, u in at.items()}
        minus = {c: -n for c, n in _total(at).items()}
        try:
            await self.ledger.reserve(tid, minus, self.ttl, idempotency_key=undo)
            await self.ledger.commit(tid, undo, split=back)
        except quota_errors.ReservationConflict as exc:
            # settled some other way already; reconciliation corrects any difference
            log.warning("giving back %s: %s", reservation, exc)


def _total(at: Mapping[str, SiteUsage]) -> dict[str, int]:
    total: dict[str, int] = {}
    for usage in at.values():
        for cls, n in usage.amounts.items():
            total[cls] = total.get(cls, 0) + n
    return {c: n for c, n in total.items() if n}
