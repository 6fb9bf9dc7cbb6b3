"""What placement needs of the global quota ledger (issue 4), as a Protocol of its own.

Placement asks ``check`` while deciding (a VNF whose tenant lacks headroom is infeasible,
with the ledger's reason), ``reserve`` before it commits, ``renew`` while the VNF is
PLACED (a reservation expires unless kept), ``commit`` once the VNF is ACTIVE (booking the
usage at the sites its members run at), ``release`` when it fails or is deleted before
that, and ``uncommit`` when an ACTIVE VNF is deleted (its usage goes back, per site).
``Unlimited`` is for tests; ``ledger_headroom.LedgerHeadroom`` is the quota ledger.

Invariant (7, no oversubscription): the broker reserves before it writes any desired
object, and releases a reservation on every path that does not end ACTIVE.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


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

        Raises ``QuotaExceeded`` when they do not fit.
        """
        ...

    async def renew(self, reservation: str, deltas: Mapping[str, int]) -> None:
        """Keep the reservation alive a while longer (call it while the VNF is PLACED).

        Raises ``QuotaExceeded`` when it lapsed and ``deltas`` no longer fit.
        """
        ...

    async def commit(self, reservation: str, at: Mapping[str, SiteUsage]) -> None:
        """Turn the reservation into usage at the sites of ``at`` (they add up to it).

        Raises ``QuotaExceeded`` when it lapsed and no longer fits.
        """
        ...

    async def release(self, reservation: str) -> None: ...

    async def uncommit(self, reservation: str, at: Mapping[str, SiteUsage]) -> None:
        """Give back what ``commit(reservation, at)`` booked (the VNF is gone)."""
        ...


class QuotaExceeded(Exception):
    """The ledger refused a reservation; ``str()`` says which class and what is left."""


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
