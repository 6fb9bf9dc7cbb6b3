"""The quota ledger through real broker processes, with the leader killed (kill -9) mid-run.

The ledger runs in every replica (each serves the API), so the replica killed is both the
leader and one serving a third of the requesters. Requesters whose replica dies retry on
another with the same idempotency key; afterwards etcd's recorded history is checked for
invariant 7 exactly as in ``tests/integration/test_quota_etcd.py``. Giving quota back (a
negative reservation) is the broker's alone — the API refuses it (422) — so the requesters
give back through a ledger of the broker's own over the same etcd, as a VNF's deletion
does, and commit or release through the API like everything else.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.devfed.federation import Federation
from broker.store import keys
from broker.quotas.ledgerstore import StoreLedger
from broker.store.etcd import EtcdStore
from quota import errors as quota_errors
from quota.ledger import Ledger
from quota.models import TenantId
from tests.support import quota_history as qh

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.slow]

REQUESTERS = 16
# Every call crosses HTTP into broker processes sharing the CI machine's cores: 16 × 1,000
# takes about 6 minutes here (it passed), so CI runs 16 × 150; set the variable for more.
ROUNDS = int(os.environ.get("MERIDIAN_QUOTA_KILL_ROUNDS", "150"))
TENANTS = ["tenant-hot", "tenant-warm"]


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    fed = Federation(state=Path(tmp_path_factory.mktemp("quota-federation")), brokers=3)
    try:
        fed.up([])
        yield fed
    finally:
        fed.down()


class Client:
    """Talks to one replica; on a dead replica or a 5xx, moves on to the next one."""

    def __init__(self, fed: Federation, http: httpx.AsyncClient, first: int) -> None:
        self.fed = fed
        self.http = http
        self.names = fed.broker_names()
        self.at = first
        self.headers = {"Authorization": f"Bearer {fed.token}"}
        self.failovers = 0

    async def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        deadline = time.monotonic() + 30
        while True:
            name = self.names[self.at % len(self.names)]
            try:
                resp = await self.http.request(
                    method, self.fed.api_url(name) + path, json=body, headers=self.headers,
                    timeout=5.0,
                )
                if resp.status_code < 500:
                    return resp
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} {path}: no replica answered for 30 s")
            self.at += 1
            self.failovers += 1
            await asyncio.sleep(0.05)


async def give_back(ledger: Ledger, tenant: str, deltas: dict[str, int], ttl: int,
                    key: str) -> str:
    """A negative reservation, as the broker itself makes one (retrying like a client)."""
    while True:
        try:
            found = await ledger.reserve(TenantId(tenant), deltas, ttl, key)
        except quota_errors.Temporary as exc:
            await asyncio.sleep(exc.retry_after)
            continue
        return str(found.id)


def handlers(client: Client, ledger: Ledger) -> tuple[qh.Reserve, qh.Settle]:
    async def reserve(tenant: str, deltas: dict[str, int], ttl: int, key: str,
                      site: str) -> str | None:
        if any(n < 0 for n in deltas.values()):
            return await give_back(ledger, tenant, deltas, ttl, key)
        resp = await client.call(
            "POST", f"/v1/quotas/{tenant}/reservations",
            {"deltas": deltas, "ttl": ttl, "idempotency_key": key},
        )
        if resp.status_code == 409:
            return None
        assert resp.status_code == 201, resp.text
        found = resp.json()
        if found["state"] != "reserved":  # a retry after the hold expired and was settled
            return None
        return str(found["id"])

    async def settle(op: str, tenant: str, rid: str) -> bool:
        path = f"/v1/quotas/{tenant}/reservations/{rid}"
        if op == "commit":
            resp = await client.call("POST", f"{path}/commit")
        else:
            resp = await client.call("DELETE", path)
        if resp.status_code == 410:
            return False
        assert resp.status_code == 200, resp.text
        return True

    return reserve, settle


async def test_leader_kill_mid_run_never_oversubscribes(brokers: Federation) -> None:
    fed = brokers
    store = EtcdStore.from_settings(fed.etcd_settings())
    ledger = Ledger(StoreLedger(store))
    try:
        _, start = await store.get_prefix(keys.QUOTA)
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(limits=limits, verify=fed.api_verify) as http:
            admin = Client(fed, http, 0)
            for tenant in TENANTS:
                resp = await admin.call("PUT", f"/v1/quotas/{tenant}", {"limits": qh.TIGHT})
                assert resp.status_code == 200, resp.text
            minus = {"deltas": {"cores": -1}}
            resp = await admin.call("POST", f"/v1/quotas/{TENANTS[0]}/reservations", minus)
            assert resp.status_code == 422, "no negative reservation through the API"
            leader = (await admin.call("GET", "/v1/leader")).json()["leader"]
            tally = qh.Tally()
            clients = [Client(fed, http, i) for i in range(REQUESTERS)]
            runs = [
                asyncio.create_task(
                    qh.requester(i, ROUNDS, TENANTS, *handlers(c, ledger), tally)
                )
                for i, c in enumerate(clients)
            ]
            while sum(tally.outcomes.values()) < REQUESTERS * ROUNDS * 0.4:
                if any(run.done() for run in runs):
                    break  # a requester failed: gather() below says why (never hang)
                await asyncio.sleep(0.1)  # polling a counter the requesters bump
            fed.kill(leader, signal.SIGKILL)
            killed_at = sum(tally.outcomes.values())
            await asyncio.gather(*runs)
            new_leader = (await admin.call("GET", "/v1/leader")).json()["leader"]
        end = await store.put(keys.QUOTA + "zz-end", b"")
        summary = await qh.check_history(store, start + 1, end, tally)
        print(f"killed {leader} after {killed_at} reservations; new leader {new_leader}; "
              f"{dict(tally.outcomes)}; failovers {sum(c.failovers for c in clients)}; {summary}")
        assert new_leader != leader
        assert sum(c.failovers for c in clients) > 0, "nobody was talking to the killed replica"
        for outcome in ("committed", "released", "abandoned", "refused"):
            assert tally.outcomes[outcome] > ROUNDS // 20, tally.outcomes
    finally:
        await ledger.close()
        await store.close()
