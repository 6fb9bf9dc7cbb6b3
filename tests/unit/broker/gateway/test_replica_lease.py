"""The replica lease: losing it is an outage to ride out, never an error that escapes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from broker.gateway.feeds import ReplicaLease
from broker.store.memory import MemoryStore


async def eventually(probe: Callable[[], object], *, within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not probe():
        assert loop.time() < deadline, f"{what} did not happen within {within:.0f}s"
        await asyncio.sleep(0.05)


async def test_keeper_replaces_an_expired_lease_and_says_so(memory_store: MemoryStore) -> None:
    lease = ReplicaLease(memory_store, ttl=2)
    renewed: list[int] = []

    async def record(lease_id: int) -> None:
        renewed.append(lease_id)

    lease.on_renewed(record)
    first = await lease.id()
    keeper = asyncio.create_task(lease.run())
    try:
        memory_store.expire_lease(first)
        await eventually(lambda: renewed, within=10, what="a new lease after expiry")
        assert not keeper.done(), "the keeper must survive a lost lease"
        second = await lease.id()
        assert renewed == [second] and second != first and lease.renewals == 1
        assert await memory_store.refresh_lease(second) > 0
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await lease.revoke()


async def test_a_write_that_finds_the_lease_gone_takes_a_new_one(
    memory_store: MemoryStore,
) -> None:
    lease = ReplicaLease(memory_store, ttl=2)
    renewed: list[int] = []

    async def record(lease_id: int) -> None:
        renewed.append(lease_id)

    lease.on_renewed(record)
    first = await lease.id()
    memory_store.expire_lease(first)
    lease.expired(first + 1)  # news about some other lease changes nothing
    assert await lease.id() == first
    lease.expired(first)
    second = await lease.id()
    assert second != first
    await eventually(lambda: renewed == [second], within=5, what="on_renewed called")
    await lease.revoke()


async def test_keeper_rides_out_an_outage(memory_store: MemoryStore) -> None:
    lease = ReplicaLease(memory_store, ttl=2)
    first = await lease.id()
    keeper = asyncio.create_task(lease.run())
    try:
        memory_store.set_unavailable()
        await asyncio.sleep(3.0)  # longer than the TTL: the lease runs out meanwhile
        assert not keeper.done()
        memory_store.set_unavailable(False)
        await eventually(
            lambda: lease.renewals == 1, within=10, what="a new lease after the outage"
        )
        assert await lease.id() != first
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await lease.revoke()
