"""The store seam of the ledger: the few key-value operations it needs, as a Protocol.

The broker plugs in an adapter over its etcd ``Store``; tests plug the same adapter over
the in-memory store. Keys are relative to the ledger's root (the adapter adds its
prefix). Invariant 7 rests on two properties every implementation must keep exactly:

- ``txn`` is atomic: either every condition held and every write landed at one new
  revision, or nothing was written and the failure reads were taken at one revision;
- ``read`` returns every result as of one revision.

Failures are reported as ``quota.errors``: ``LedgerUnavailable`` when the store cannot
be reached, ``LeaseGone`` when a write names a lease that has ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias


@dataclass(frozen=True, slots=True)
class Item:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Unchanged:
    """Holds when ``key`` was last modified at ``mod_revision`` (0: the key is absent)."""

    key: str
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Created:
    """Holds when ``key`` exists and was created at ``create_revision`` (0: is absent)."""

    key: str
    create_revision: int


Cond: TypeAlias = Unchanged | Created


@dataclass(frozen=True, slots=True)
class Write:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Remove:
    key: str


@dataclass(frozen=True, slots=True)
class Read:
    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    succeeded: bool
    revision: int
    # on failure: one tuple of Items per failure read, in order; () on success
    reads: tuple[tuple[Item, ...], ...] = ()


MAX_OPS = 128
"""Most conditions, writes or reads in one transaction (etcd's --max-txn-ops default)."""


class LedgerStore(Protocol):
    async def read(self, reads: Sequence[Read]) -> tuple[list[tuple[Item, ...]], int]:
        """Every read's items (sorted by key), all as of the returned revision."""
        ...

    async def txn(
        self, conds: Sequence[Cond], writes: Sequence[Write | Remove], reads: Sequence[Read]
    ) -> Outcome:
        """If every ``conds`` holds apply ``writes``, else run ``reads``; atomically."""
        ...

    async def grant_lease(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, ttl granted in seconds)."""
        ...
