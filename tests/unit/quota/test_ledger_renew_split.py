"""The two ledger operations VNF placement needs: renewing a hold, committing it per site."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broker.quotas.ledgerstore import StoreLedger
from broker.store import keys
from broker.store.memory import MemoryStore
from quota import errors
from quota.ledger import Ledger
from quota.models import ReservationId, TenantId, TenantQuota

T = TenantId("tenant-v")


@pytest.fixture
async def mem() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    yield store
    await store.close()


@pytest.fixture
async def ledger(mem: MemoryStore) -> AsyncIterator[Ledger]:
    found = Ledger(StoreLedger(mem))
    await found.set_quota(T, TenantQuota(limits={"cores": 10, "instances": 4}))
    yield found
    await found.close()


async def hold_lease(mem: MemoryStore, rid: str) -> int:
    kv = await mem.get(f"{keys.QUOTA}holds/{T}/{rid}")
    assert kv is not None, f"hold {rid} is gone"
    return kv.lease


async def test_renew_moves_the_hold_to_a_new_lease(ledger: Ledger, mem: MemoryStore) -> None:
    held = await ledger.reserve(T, {"cores": 6}, 30, idempotency_key="vnf.a")
    created = (await mem.get(f"{keys.QUOTA}holds/{T}/vnf.a"))
    assert created is not None
    old = created.lease
    renewed = await ledger.renew(T, held.id, 300)
    assert renewed.deltas == {"cores": 6} and renewed.expires_ms > held.expires_ms
    new = await hold_lease(mem, "vnf.a")
    assert new != old
    mem.expire_lease(old)  # the original lease ends: the renewed hold stays
    await hold_lease(mem, "vnf.a")
    after = await mem.get(f"{keys.QUOTA}holds/{T}/vnf.a")
    assert after is not None and after.create_revision == created.create_revision
    # the hold still counts: 4 cores are left, not 10
    with pytest.raises(errors.QuotaExceeded) as caught:
        await ledger.reserve(T, {"cores": 5}, 30)
    assert (caught.value.resource, caught.value.left) == ("cores", 4)
    await ledger.commit(T, held.id, site="s1")  # and it commits as before
    assert (await ledger.view(T)).account.used("cores", site="s1") == 6


async def test_renew_never_brings_back_an_expired_hold(ledger: Ledger, mem: MemoryStore) -> None:
    await ledger.reserve(T, {"cores": 6}, 30, idempotency_key="vnf.b")
    mem.expire_lease(await hold_lease(mem, "vnf.b"))
    with pytest.raises(errors.ReservationExpired):
        await ledger.renew(T, ReservationId("vnf.b"), 30)
    assert (await mem.get(f"{keys.QUOTA}holds/{T}/vnf.b")) is None
    # and settled reservations are not renewable either
    done = await ledger.reserve(T, {"cores": 1}, 30, idempotency_key="vnf.c")
    await ledger.release(T, done.id)
    with pytest.raises(errors.ReservationConflict, match="released"):
        await ledger.renew(T, done.id, 30)


async def test_commit_split_books_usage_at_each_site(ledger: Ledger) -> None:
    held = await ledger.reserve(T, {"cores": 6, "instances": 3}, 30, idempotency_key="vnf.d")
    split = {
        "s1": ("eu", {"cores": 4, "instances": 2}),
        "s2": ("us", {"cores": 2, "instances": 1}),
    }
    settled = await ledger.commit(T, held.id, split=split)
    assert settled.state == "committed"
    account = (await ledger.view(T)).account
    assert account.used("cores", site="s1") == 4 and account.used("cores", site="s2") == 2
    assert account.used("instances", region="us") == 1 and account.used("cores") == 6
    again = await ledger.commit(T, held.id, split=split)  # a retry counts once
    assert again.state == "committed"
    assert (await ledger.view(T)).account.used("cores") == 6


async def test_commit_split_must_add_up(ledger: Ledger) -> None:
    held = await ledger.reserve(T, {"cores": 6}, 30, idempotency_key="vnf.e")
    with pytest.raises(errors.ReservationConflict, match="does not add up"):
        await ledger.commit(T, held.id, split={"s1": ("eu", {"cores": 5})})
    view = await ledger.view(T)
    assert "vnf.e" in view.holds and view.account.used("cores") == 0
