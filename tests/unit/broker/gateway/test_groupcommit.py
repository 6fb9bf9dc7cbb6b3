"""Opening records in batches: one transaction per batch, each caller back only once its
own records are written, a failed batch refused whole, no key twice per transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from broker import errors
from broker.gateway.feeds import ReplicaLease
from broker.gateway.groupcommit import GroupCommit
from broker.store.memory import MemoryStore
from broker.store.protocol import Put


class Counting(MemoryStore):
    """The in-memory store, counting transactions and their sizes (slow on purpose, so
    openings pile up behind one in flight, as they do behind etcd's round trip)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    async def txn(self, compares, success, failure=()):  # type: ignore[no-untyped-def]
        self.sizes.append(len(success))
        await asyncio.sleep(0.01)
        return await super().txn(compares, success, failure)


def opening(site: str, value: bytes = b"on") -> tuple[list[str], Callable[[int], list[Put]]]:
    status, inventory = f"sitestatus/{site}", f"inventory/{site}"
    return [status, inventory], lambda lease_id: [
        Put(status, value, lease_id),
        Put(inventory, b"inv"),
    ]


async def test_a_herd_is_written_in_few_transactions() -> None:
    store = Counting()
    commits = GroupCommit(store, ReplicaLease(store, ttl=3), max_ops=120)
    await asyncio.gather(*(commits.write(*opening(f"s{i}")) for i in range(600)))
    assert commits.written == 600
    assert len(store.sizes) <= 12 and max(store.sizes) <= 120
    kvs, _ = await store.get_prefix("sitestatus/")
    assert len(kvs) == 600 and all(kv.lease for kv in kvs)  # under the replica's lease


async def test_one_opening_alone_is_written_at_once() -> None:
    store = Counting()
    commits = GroupCommit(store, ReplicaLease(store, ttl=3))
    await asyncio.wait_for(commits.write(*opening("solo")), 1.0)
    assert store.sizes == [2]


async def test_a_site_twice_in_a_herd_goes_in_two_transactions_newest_last() -> None:
    store = Counting()
    commits = GroupCommit(store, ReplicaLease(store, ttl=3))
    await asyncio.gather(
        commits.write(*opening("a", b"old")),
        commits.write(*opening("b")),
        commits.write(*opening("a", b"new")),
    )
    kv = await store.get("sitestatus/a")
    assert kv is not None and kv.value == b"new"


async def test_a_failed_batch_refuses_each_of_its_openings_and_writes_none() -> None:
    store = Counting()
    lease = ReplicaLease(store, ttl=3)
    await lease.id()
    commits = GroupCommit(store, lease)
    store.set_unavailable()
    results = await asyncio.gather(
        *(commits.write(*opening(f"s{i}")) for i in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, errors.StoreUnavailable) for r in results)
    store.set_unavailable(False)
    assert (await store.get_prefix("sitestatus/"))[0] == []
    await commits.write(*opening("later"))  # and it goes on
    assert await store.get("sitestatus/later") is not None


async def test_an_opening_abandoned_before_its_batch_is_never_written() -> None:
    store = Counting()
    commits = GroupCommit(store, ReplicaLease(store, ttl=3))
    first = asyncio.create_task(commits.write(*opening("first")))
    await asyncio.sleep(0)  # first's batch is in flight
    gone = asyncio.create_task(commits.write(*opening("gone")))
    await asyncio.sleep(0)
    gone.cancel()
    await first
    await commits.write(*opening("after"))
    assert await store.get("sitestatus/gone") is None
    assert await store.get("sitestatus/after") is not None


def test_a_batch_must_hold_something() -> None:
    store = MemoryStore()
    with pytest.raises(ValueError, match="max_ops"):
        GroupCommit(store, ReplicaLease(store, ttl=3), max_ops=0)
