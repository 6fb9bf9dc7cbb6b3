"""Every error the quota library raises, under one root.

The library never sees a foreign exception: the store adapter that the broker plugs in
translates its own failures into ``LedgerUnavailable`` / ``LeaseGone`` before they reach
the ledger. A ``Temporary`` error carries a delay and is worth retrying unchanged; every
other error is permanent until its input changes. Refusals carry the numbers a user needs
to fix the request (invariant 7: no oversubscription — a refusal is how it is kept).

QuotaError
├── Temporary                      (retry_after: seconds)
│   ├── LedgerUnavailable          the store cannot be reached or timed out
│   └── Contended                  too many concurrent writers; retry shortly
├── LeaseGone                      a lease the ledger attached keys to has ended
├── InvalidQuota                   (field: dotted path, problem) bad limits, class, tenant
├── QuotaExceeded                  (tenant, resource, requested, left, limit, scope)
├── ReservationNotFound            (tenant, reservation) never existed, or expired
│   └── ReservationExpired         its lease ran out before commit
└── ReservationConflict            (tenant, reservation) the id is in another state/use
"""

from __future__ import annotations


class QuotaError(Exception):
    """Root of every error the quota library raises."""


class Temporary(QuotaError):
    """Retrying the same request later may succeed."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LedgerUnavailable(Temporary):
    """The store behind the ledger is unreachable or timed out."""


class Contended(Temporary):
    """Writers on the same tenant kept winning; the request was not applied."""


class LeaseGone(QuotaError):
    """A lease the ledger wanted to attach keys to has expired or was revoked."""


class InvalidQuota(QuotaError):
    """A limit, class name, tenant id or delta is wrong; ``field`` is its dotted path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class QuotaExceeded(QuotaError):
    """Admitting the request would take ``resource`` past its limit in ``scope``.

    ``left`` is what may still be reserved (0 when usage is already over the limit).
    """

    def __init__(
        self,
        *,
        tenant: str,
        resource: str,
        requested: int,
        left: int,
        limit: int,
        used: int,
        reserved: int,
        scope: str = "global",
    ) -> None:
        super().__init__(
            f"quota exceeded for {resource} ({scope}) in project {tenant}: requested "
            f"{requested}, {left} left (limit {limit}, used {used}, reserved {reserved})"
        )
        self.tenant = tenant
        self.resource = resource
        self.requested = requested
        self.left = left
        self.limit = limit
        self.used = used
        self.reserved = reserved
        self.scope = scope


class ReservationNotFound(QuotaError):
    """No live reservation with this id (never made, expired, or already settled)."""

    def __init__(self, tenant: str, reservation: str, why: str = "does not exist") -> None:
        super().__init__(f"reservation {reservation!r} of project {tenant} {why}")
        self.tenant = tenant
        self.reservation = reservation


class ReservationExpired(ReservationNotFound):
    """The reservation's lease ran out (its requester took too long or crashed)."""

    def __init__(self, tenant: str, reservation: str) -> None:
        super().__init__(tenant, reservation, "expired (or never existed) before commit")


class ReservationConflict(QuotaError):
    """The reservation id is in use for other deltas, or was settled the other way."""

    def __init__(self, tenant: str, reservation: str, why: str) -> None:
        super().__init__(f"reservation {reservation!r} of project {tenant}: {why}")
        self.tenant = tenant
        self.reservation = reservation
