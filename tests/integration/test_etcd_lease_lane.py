"""Lease calls have their own lane: a keepalive never waits behind a busy etcd pool,
nor behind a lagging event loop (``broker.store.keepalive``).

Under a connect storm the store's main pool can be queued for seconds; an election or
replica-lease keepalive behind that queue would miss its TTL. Here the main pool is
blocked outright (every thread parked), and lease calls must still go through at once
while an ordinary read waits its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from broker import errors
from broker.store import keepalive, urgency
from broker.store.etcd import EtcdStore
from broker.store.etcdaio import AsyncEtcdStore

pytestmark = pytest.mark.etcd


async def test_lease_calls_pass_a_blocked_pool(threaded_etcd_store: EtcdStore) -> None:
    lease = await threaded_etcd_store.grant_lease(5)
    gate = threading.Event()
    pool = threaded_etcd_store._pool  # the main pool, parked below: white-box on purpose
    parked = [pool.submit(gate.wait, 30) for _ in range(pool._max_workers)]
    try:
        read = asyncio.create_task(threaded_etcd_store.get("lane/probe"))
        ttl = await asyncio.wait_for(threaded_etcd_store.refresh_lease(lease.id), 10)
        assert ttl > 0
        other = await asyncio.wait_for(threaded_etcd_store.grant_lease(5), 10)
        await asyncio.wait_for(threaded_etcd_store.revoke_lease(other.id), 10)
        await asyncio.sleep(0.2)
        assert not read.done(), "the read should still be queued behind the parked pool"
    finally:
        gate.set()
    assert await asyncio.wait_for(read, 10) is None
    assert all(f.result() for f in parked)
    await threaded_etcd_store.revoke_lease(lease.id)


async def test_a_lagging_loop_keeps_its_lease(threaded_etcd_store: EtcdStore) -> None:
    """The loop stalls for longer than the TTL (a connect storm's backlog); the lease, and
    the key on it, survive because the keeper thread refreshed it meanwhile."""
    lease = await threaded_etcd_store.grant_lease(2)
    await threaded_etcd_store.put("lane/held", b"x", lease=lease.id)
    assert await threaded_etcd_store.refresh_lease(lease.id) > 0  # from now on it is kept
    time.sleep(3.0)  # noqa: ASYNC251 -- stalling the loop for 1.5 TTLs is the point
    ttl = await asyncio.wait_for(threaded_etcd_store.refresh_lease(lease.id), 10)
    assert 1 <= ttl <= 2
    kv = await threaded_etcd_store.get("lane/held")
    assert kv is not None and kv.lease == lease.id
    await threaded_etcd_store.revoke_lease(lease.id)
    assert await threaded_etcd_store.get("lane/held") is None
    with pytest.raises(errors.LeaseExpired):
        await threaded_etcd_store.refresh_lease(lease.id)


async def test_a_lease_nobody_asks_about_runs_out(threaded_etcd_store: EtcdStore) -> None:
    """A wedged process stops asking: the keeper must let the lease expire."""
    lease = await threaded_etcd_store.grant_lease(2)
    await threaded_etcd_store.put("lane/wedged", b"x", lease=lease.id)
    assert await threaded_etcd_store.refresh_lease(lease.id) > 0
    # the demand window + 1 TTL to expire + margin, without a single ask
    await asyncio.sleep(keepalive.DEMAND_SECONDS + 2 + 2.5)
    assert await threaded_etcd_store.get("lane/wedged") is None
    with pytest.raises(errors.LeaseExpired):
        await threaded_etcd_store.refresh_lease(lease.id)


async def test_a_kept_lease_is_answered_without_waiting_for_any_thread(
    threaded_etcd_store: EtcdStore,
) -> None:
    """Once kept, a refresh is answered from the keeper's last success at once: even
    with the lease lane itself parked, the caller's deadline cannot be missed."""
    lease = await threaded_etcd_store.grant_lease(5)
    assert await threaded_etcd_store.refresh_lease(lease.id) > 0
    gate = threading.Event()
    lane = threaded_etcd_store._lease_pool  # white-box on purpose, as above
    parked = [lane.submit(gate.wait, 30) for _ in range(lane._max_workers)]
    try:
        ttl = await asyncio.wait_for(threaded_etcd_store.refresh_lease(lease.id), 1.0)
        assert 1 <= ttl <= 5
    finally:
        gate.set()
    assert all(f.result() for f in parked)
    await threaded_etcd_store.revoke_lease(lease.id)


async def kept_from_its_grant(store: EtcdStore | AsyncEtcdStore) -> None:
    """The loop stalls right after the grant, before it ever refreshed (a replica lease
    taken by the first stream of a connect storm): the lease, and the key on it, survive."""
    lease = await store.grant_lease(2)
    await store.put("lane/born", b"x", lease=lease.id)
    time.sleep(3.5)  # noqa: ASYNC251 -- a loop blocked for 1.75 TTLs before any refresh
    kv = await store.get("lane/born")
    assert kv is not None and kv.lease == lease.id
    assert await asyncio.wait_for(store.refresh_lease(lease.id), 10) > 0
    await store.revoke_lease(lease.id)


async def test_a_lease_is_kept_from_its_grant(threaded_etcd_store: EtcdStore) -> None:
    await kept_from_its_grant(threaded_etcd_store)


async def test_a_lease_is_kept_from_its_grant_async(async_etcd_store: AsyncEtcdStore) -> None:
    await kept_from_its_grant(async_etcd_store)


@contextlib.contextmanager
def parked(store: EtcdStore) -> Iterator[None]:
    """Every thread of the store's main pool parked until the block ends (white-box)."""
    gate = threading.Event()
    futures = [store._pool.submit(gate.wait, 30) for _ in range(store._pool._max_workers)]
    try:
        yield
    finally:
        gate.set()
    assert all(f.result() for f in futures)


async def test_urgent_calls_pass_a_blocked_pool(threaded_etcd_store: EtcdStore) -> None:
    """A DOWN verdict's or a promotion's calls (``urgency.urgent``) go through at once
    while the main pool is parked; the same call outside the block waits its turn, and
    tasks started inside the block carry the flag."""
    store = threaded_etcd_store
    with parked(store):
        read = asyncio.create_task(store.get("lane/probe"))
        with urgency.urgent():
            await asyncio.wait_for(store.put("lane/urgent", b"down"), 10)
            both = asyncio.gather(store.get("lane/urgent"), store.get("lane/probe"))
        found, absent = await asyncio.wait_for(both, 10)
        assert found is not None and found.value == b"down" and absent is None
        await asyncio.sleep(0.2)
        assert not read.done(), "the ordinary read should still be queued"
    assert await asyncio.wait_for(read, 10) is None
