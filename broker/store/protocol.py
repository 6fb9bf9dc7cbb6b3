"""The async key-value Store that the broker uses for all of its state.

It mirrors the part of etcd v3 that Meridian needs: revisions, leases, transactions with
compares, and prefix watches. Keys are str (relative to the store's root prefix, e.g.
``sites/edge-1``), values bytes. Implementations must keep etcd's semantics exactly, so a
test that passes on the in-memory fake means the same on etcd:

- every successful write advances one global revision; ``txn`` is atomic;
- ``create_revision`` of a key is the revision at which it was created (0 = absent);
- a lease's keys are deleted when it expires or is revoked;
- a watch delivers every event after ``start_revision`` in revision order.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


class Target(enum.Enum):
    """What a Compare looks at."""

    VALUE = "value"
    CREATE = "create"  # create_revision; 0 when the key is absent
    MOD = "mod"  # mod_revision; 0 when the key is absent
    VERSION = "version"  # 0 when the key is absent


class Op(enum.Enum):
    EQUAL = "=="
    NOT_EQUAL = "!="
    LESS = "<"
    GREATER = ">"


@dataclass(frozen=True, slots=True)
class Compare:
    key: str
    target: Target
    op: Op
    value: int | bytes


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Get:
    key: str
    prefix: bool = False


TxnOp: TypeAlias = Put | Delete | Get


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int  # the store's revision after the transaction
    # one entry per op of the branch that ran: the KeyValues a Get returned, [] otherwise
    responses: tuple[tuple[KeyValue, ...], ...] = ()


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    key: str
    value: bytes  # b"" on delete
    mod_revision: int
    create_revision: int = 0


@dataclass(frozen=True, slots=True)
class Lease:
    id: int
    ttl: int  # seconds granted


class Store(Protocol):
    """Async access to Meridian's state. Every call may raise ``StoreUnavailable``."""

    async def get(self, key: str) -> KeyValue | None: ...

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` sorted by key, and the revision they were read at."""
        ...

    async def get_range(
        self,
        prefix: str,
        *,
        after: str = "",
        before: str = "",
        limit: int = 0,
        descending: bool = False,
    ) -> tuple[list[KeyValue], int, int]:
        """One page of the keys under ``prefix``: those whose rest after the prefix sorts
        strictly after ``after`` and strictly before ``before`` (empty: unbounded), sorted
        by key (``descending``: last first), at most ``limit`` of them (0: all). Returns
        the page, the revision it was read at, and how many keys matched in all (more than
        the page holds when ``limit`` cut it short)."""
        ...

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write unconditionally; returns the new revision."""
        ...

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        """Returns how many keys were deleted."""
        ...

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[TxnOp],
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult: ...

    async def grant_lease(self, ttl: int) -> Lease: ...

    async def refresh_lease(self, lease_id: int) -> int:
        """Keep a lease alive; returns the remaining TTL. Raises ``LeaseExpired``."""
        ...

    async def revoke_lease(self, lease_id: int) -> None: ...

    def watch_prefix(
        self, prefix: str, *, start_revision: int | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Events under ``prefix`` from ``start_revision`` (default: from now) on.

        The iterator ends (raising ``StoreUnavailable``) if the watch breaks; callers
        re-list and re-watch. Closing the iterator cancels the watch.
        """
        ...

    async def close(self) -> None: ...
