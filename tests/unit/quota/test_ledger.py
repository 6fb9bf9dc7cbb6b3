"""The ledger over the in-memory store (our own seam's fake), through the broker adapter."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from broker.quotas.ledgerstore import StoreLedger
from broker.store import keys
from broker.store.memory import MemoryStore
from quota import errors
from quota.ledger import Ledger
from quota.models import ReservationId, TenantId, TenantQuota

T = TenantId("tenant-a")


@pytest.fixture
async def mem() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    yield store
    await store.close()


@pytest.fixture
async def ledger(mem: MemoryStore) -> AsyncIterator[Ledger]:
    found = Ledger(StoreLedger(mem))
    await found.set_quota(T, TenantQuota(limits={"cores": 10, "instances": 3}))
    yield found
    await found.close()


async def live_holds(mem: MemoryStore, tenant: str = T) -> list[dict[str, int]]:
    items, _ = await mem.get_prefix(f"{keys.QUOTA}holds/{tenant}/")
    return [json.loads(kv.value)["deltas"] for kv in items]


async def test_reserve_commit_release_roundtrip(ledger: Ledger, mem: MemoryStore) -> None:
    a = await ledger.reserve(T, {"cores": 4}, 30, site="edge-1", region="eu")
    b = await ledger.reserve(T, {"cores": 4}, 30)
    with pytest.raises(errors.QuotaExceeded) as caught:
        await ledger.reserve(T, {"cores": 3, "instances": 1}, 30)
    assert (caught.value.resource, caught.value.requested, caught.value.left) == ("cores", 3, 2)
    await ledger.commit(T, a.id)
    await ledger.release(T, b.id)
    view = await ledger.view(T)
    assert view.account.used("cores") == 4 and view.account.used("cores", site="edge-1") == 4
    assert view.holds == {}
    await ledger.reserve(T, {"cores": 6}, 30)  # the released 4 are free again
    assert await live_holds(mem) == [{"cores": 6}]


@pytest.mark.parametrize(
    ("first", "second", "outcome"),
    [
        ("reserve", "reserve", "same reservation"),
        ("commit", "commit", "counted once"),
        ("release", "release", "released once"),
        ("commit", "release", "conflict"),
    ],
)
async def test_idempotent_retries(ledger: Ledger, first: str, second: str, outcome: str) -> None:
    r = await ledger.reserve(T, {"cores": 2}, 30, "vnf-7:create")
    again = await ledger.reserve(T, {"cores": 2}, 30, "vnf-7:create")
    assert again.id == r.id
    assert len((await ledger.view(T)).holds) == 1
    if first == "reserve":
        return
    settle = {"commit": ledger.commit, "release": ledger.release}
    await settle[first](T, r.id)
    if outcome == "conflict":
        with pytest.raises(errors.ReservationConflict):
            await settle[second](T, r.id)
        return
    again_settled = await settle[second](T, r.id)
    assert again_settled.state == ("committed" if first == "commit" else "released")
    # a retried reserve after settling says how it was settled, and reserves nothing
    late = await ledger.reserve(T, {"cores": 2}, 30, "vnf-7:create")
    assert late.state == again_settled.state
    view = await ledger.view(T)
    assert view.holds == {}
    assert view.account.used("cores") == (2 if first == "commit" else 0)


async def test_same_key_other_amounts_is_a_conflict(ledger: Ledger) -> None:
    await ledger.reserve(T, {"cores": 2}, 30, "k1")
    with pytest.raises(errors.ReservationConflict):
        await ledger.reserve(T, {"cores": 3}, 30, "k1")


async def test_a_fresh_ledger_on_another_replica_sees_idempotency(
    ledger: Ledger, mem: MemoryStore
) -> None:
    r = await ledger.reserve(T, {"cores": 2}, 30, "k2")
    await ledger.commit(T, r.id, site="edge-1")
    other = Ledger(StoreLedger(mem))
    assert (await other.commit(T, r.id)).state == "committed"
    assert (await other.reserve(T, {"cores": 2}, 30, "k2")).state == "committed"
    assert (await other.view(T)).account.used("cores") == 2


async def test_expired_reservation_frees_quota_and_cannot_commit(
    ledger: Ledger, mem: MemoryStore
) -> None:
    r = await ledger.reserve(T, {"cores": 10}, 5)
    item = await mem.get(f"{keys.QUOTA}holds/{T}/{r.id}")
    assert item is not None and item.lease
    mem.expire_lease(item.lease)  # the requester crashed; its lease ran out
    with pytest.raises(errors.ReservationExpired):
        await ledger.commit(T, r.id)
    assert (await ledger.release(T, r.id)).state == "released"  # a no-op, not an error
    # the cache still counted the hold; admission re-reads before refusing
    await ledger.reserve(T, {"cores": 10}, 5)


async def test_stale_cache_refuses_only_after_rereading(ledger: Ledger, mem: MemoryStore) -> None:
    r = await ledger.reserve(T, {"cores": 10}, 2)
    item = await mem.get(f"{keys.QUOTA}holds/{T}/{r.id}")
    assert item is not None
    await asyncio.sleep(3.2)  # past the lease (2 s + 1 s slack) and its hint
    await ledger.reserve(T, {"cores": 10}, 2)


async def test_negative_deltas_free_usage_on_commit(ledger: Ledger) -> None:
    r = await ledger.reserve(T, {"cores": 8}, 30)
    await ledger.commit(T, r.id, site="edge-1")
    d = await ledger.reserve(T, {"cores": -8}, 30, site="edge-1")
    with pytest.raises(errors.QuotaExceeded):  # a pending deletion frees nothing yet
        await ledger.reserve(T, {"cores": 4}, 30)
    await ledger.commit(T, d.id)
    await ledger.reserve(T, {"cores": 10}, 30)


async def test_limit_below_usage(ledger: Ledger) -> None:
    r = await ledger.reserve(T, {"cores": 8}, 30)
    await ledger.commit(T, r.id)
    await ledger.set_quota(T, TenantQuota(limits={"cores": 4}))
    with pytest.raises(errors.QuotaExceeded) as caught:
        await ledger.reserve(T, {"cores": 1}, 30)
    assert caught.value.left == 0 and caught.value.used == 8
    d = await ledger.reserve(T, {"cores": -2}, 30)
    await ledger.commit(T, d.id)


async def test_quota_class_change_reaches_a_warm_cache(ledger: Ledger, mem: MemoryStore) -> None:
    u = TenantId("tenant-u")
    other = Ledger(StoreLedger(mem))
    await other.reserve(u, {"volumes": 5}, 30)  # default class: 10 volumes
    await ledger.set_class("default", {"volumes": 6})
    with pytest.raises(errors.QuotaExceeded):
        await other.reserve(u, {"volumes": 2}, 30)


async def test_concurrent_requests_are_group_committed(ledger: Ledger) -> None:
    results = await asyncio.gather(
        *(ledger.reserve(T, {"cores": 1}, 30) for _ in range(40)), return_exceptions=True
    )
    granted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, errors.QuotaExceeded)]
    assert len(granted) == 10 and len(refused) == 30
    assert ledger.stats["txns"] <= 3, ledger.stats  # not one transaction per request


async def test_two_replicas_never_oversubscribe(mem: MemoryStore) -> None:
    replicas = [Ledger(StoreLedger(mem)) for _ in range(3)]
    await replicas[0].set_quota(T, TenantQuota(limits={"cores": 25}))

    async def hammer(ledger: Ledger, n: int) -> int:
        got = 0
        for _ in range(n):
            try:
                await ledger.reserve(T, {"cores": 1}, 30)
                got += 1
            except errors.QuotaExceeded:
                pass
        return got

    counts = await asyncio.gather(*(hammer(replicas[i % 3], 5) for i in range(12)))
    assert sum(counts) == 25
    assert sum(d["cores"] for d in await live_holds(mem)) == 25


async def test_unknown_reservation(ledger: Ledger) -> None:
    with pytest.raises(errors.ReservationNotFound):
        await ledger.commit(T, ReservationId("never-made"))


async def test_store_down_is_temporary(mem: MemoryStore) -> None:
    ledger = Ledger(StoreLedger(mem))
    mem.set_unavailable()
    with pytest.raises(errors.LedgerUnavailable):
        await ledger.reserve(T, {"cores": 1}, 30)


@pytest.mark.parametrize("ttl", [0, 1, 100_000])
async def test_bad_ttl(ledger: Ledger, ttl: int) -> None:
    with pytest.raises(errors.InvalidQuota) as caught:
        await ledger.reserve(T, {"cores": 1}, ttl)
    assert caught.value.field == "ttl"


async def test_a_limit_raised_on_another_replica_is_seen_before_refusing(
    ledger: Ledger, mem: MemoryStore
) -> None:
    """A refusal writes nothing, so nothing else would make this replica re-read: it
    reads the tenant again once before it refuses."""
    other = Ledger(StoreLedger(mem))
    await ledger.reserve(T, {"cores": 10}, 30)  # this replica's cache: cores at the limit
    with pytest.raises(errors.QuotaExceeded):
        await ledger.reserve(T, {"cores": 1}, 30)
    await other.set_quota(T, TenantQuota(limits={"cores": 20, "instances": 3}))
    loads = ledger.stats["loads"]
    await ledger.reserve(T, {"cores": 5}, 30)  # the raised limit, not the cached one
    assert ledger.stats["loads"] == loads + 1
    with pytest.raises(errors.QuotaExceeded) as caught:  # refused on what etcd holds
        await ledger.reserve(T, {"cores": 6}, 30)
    assert caught.value.left == 5
    await other.close()
