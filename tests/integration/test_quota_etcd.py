"""The quota ledger on real etcd: 16 requesters × 1,000 random reservations, 3 replicas.

Invariant 7 (no oversubscription) is checked on etcd's own recorded history, revision by
revision (``tests.support.quota_history``), not on what the clients believe.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from broker.quotas.ledgerstore import StoreLedger
from broker.store import keys
from broker.store.etcd import EtcdStore
from quota import errors
from quota.ledger import Ledger
from quota.models import ReservationId, TenantId, TenantQuota
from tests.support import etcd as etcd_support
from tests.support import quota_history as qh

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

REQUESTERS = 16
ROUNDS = 1_000
TENANTS = ["tenant-hot", "tenant-warm"]


async def test_sixteen_requesters_never_oversubscribe(
    etcd_server: etcd_support.Cluster, etcd_root: str
) -> None:
    stores = [EtcdStore.from_settings(etcd_server.settings(root=etcd_root)) for _ in range(3)]
    ledgers = [Ledger(StoreLedger(s)) for s in stores]
    try:
        _, start = await stores[0].get_prefix(keys.QUOTA)  # the replay sees the limits set
        for tenant in TENANTS:
            await ledgers[0].set_quota(TenantId(tenant), TenantQuota(limits=qh.TIGHT))
        tally = qh.Tally()

        def reserve_on(ledger: Ledger) -> qh.Reserve:
            async def reserve(tenant: str, deltas: dict[str, int], ttl: int, key: str,
                              site: str) -> str | None:
                while True:  # a Temporary error was not applied: retry like an API client
                    try:
                        found = await ledger.reserve(TenantId(tenant), deltas, ttl, key, site=site)
                    except errors.QuotaExceeded:
                        return None
                    except errors.Temporary as exc:
                        await asyncio.sleep(exc.retry_after)
                        continue
                    return found.id

            return reserve

        def settle_on(ledger: Ledger) -> qh.Settle:
            async def settle(op: str, tenant: str, rid: str) -> bool:
                while True:
                    try:
                        if op == "commit":
                            await ledger.commit(TenantId(tenant), ReservationId(rid))
                        else:
                            await ledger.release(TenantId(tenant), ReservationId(rid))
                    except errors.ReservationExpired:
                        return False
                    except errors.Temporary as exc:
                        await asyncio.sleep(exc.retry_after)
                        continue
                    return True

            return settle

        started = time.monotonic()
        await asyncio.gather(
            *(
                qh.requester(
                    i, ROUNDS, TENANTS, reserve_on(ledgers[i % 3]), settle_on(ledgers[i % 3]),
                    tally,
                )
                for i in range(REQUESTERS)
            )
        )
        elapsed = time.monotonic() - started
        end = await stores[0].put(keys.QUOTA + "zz-end", b"")
        summary = await qh.check_history(stores[0], start + 1, end, tally)
        stats = sum((ledger.stats for ledger in ledgers), start=type(ledgers[0].stats)())
        print(f"{REQUESTERS * ROUNDS} reservations in {elapsed:.1f}s: {dict(tally.outcomes)}; "
              f"history {summary}; ledgers {dict(stats)}")
        # the run must have exercised every path, or it proves little
        for outcome in ("committed", "released", "abandoned", "refused"):
            assert tally.outcomes[outcome] > 100, tally.outcomes
        assert stats["conflicts"] > 0, "three replicas never raced: the test is too gentle"
    finally:
        for ledger in ledgers:
            await ledger.close()
        for store in stores:
            await store.close()
