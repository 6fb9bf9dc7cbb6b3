"""What placement needs of the global quota ledger (issue 4), as a Protocol of its own.

Placement asks ``check`` while deciding (a VNF whose tenant lacks headroom is infeasible,
with the ledger's reason), ``reserve`` before it commits, ``commit`` once the VNF is
ACTIVE and ``release`` when it fails or is deleted before that. ``Unlimited`` is the
stand-in until the real ledger is plugged in; a ledger adapter only has to translate.

Invariant (7, no oversubscription): the broker reserves before it writes any desired
object, and releases a reservation on every path that does not end ACTIVE.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class Headroom(Protocol):
    async def check(self, tenant: str, deltas: Mapping[str, int]) -> str | None:
        """None when ``deltas`` fit the tenant's quota now, else what is short."""
        ...

    async def reserve(self, tenant: str, deltas: Mapping[str, int], key: str) -> str:
        """Reserve ``deltas``; returns a reservation id. Idempotent per ``key``.

        Raises ``QuotaExceeded`` when they do not fit.
        """
        ...

    async def commit(self, reservation: str) -> None: ...

    async def release(self, reservation: str) -> None: ...


class QuotaExceeded(Exception):
    """The ledger refused a reservation; ``str()`` says which class and what is left."""


class Unlimited:
    """Every tenant has infinite headroom; keeps a log for tests."""

    def __init__(self) -> None:
        self.reserved: dict[str, dict[str, int]] = {}
        self.committed: set[str] = set()
        self.released: set[str] = set()

    async def check(self, tenant: str, deltas: Mapping[str, int]) -> str | None:
        return None

    async def reserve(self, tenant: str, deltas: Mapping[str, int], key: str) -> str:
        self.reserved[key] = dict(deltas)
        return key

    async def commit(self, reservation: str) -> None:
        self.committed.add(reservation)

    async def release(self, reservation: str) -> None:
        self.released.add(reservation)
        self.reserved.pop(reservation, None)
