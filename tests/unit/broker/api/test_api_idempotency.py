"""``POST /v1/vnfs`` under an ``Idempotency-Key``, over the in-memory store: a retry is the
same VNF, a different body is a 409, keys are per caller, leased, and race-safe."""

from __future__ import annotations

import asyncio
import json

import httpx

from broker.store import keys
from broker.store.memory import MemoryStore
from tests.unit.broker.api.apitest_support import ADMIN, OPERATOR, assert_problem
from tests.unit.broker.api.test_api_vnfs import body, seeded


OTHER = {**body(), "name": "vims-b"}


def keyed(who: dict[str, str], key: str) -> dict[str, str]:
    return {**who, "Idempotency-Key": key}


async def vnf_ids(store: MemoryStore) -> list[str]:
    return [kv.key for kv in (await store.get_prefix(keys.VNFS))[0]]


async def test_a_retry_returns_the_same_vnf(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    await seeded(memstore)
    first = await api.post("/v1/vnfs", json=body(), headers=keyed(ADMIN, "k-1"))
    assert first.status_code == 202, first.text
    again = await api.post("/v1/vnfs", json=body(), headers=keyed(ADMIN, "k-1"))
    assert (again.status_code, again.json()) == (202, first.json())
    assert again.headers["location"] == first.headers["location"]
    assert await vnf_ids(memstore) == [keys.vnf(first.json()["id"])]
    # without a key, or with another, the same body is a new VNF
    other = await api.post("/v1/vnfs", json=body(), headers=keyed(ADMIN, "k-2"))
    plain = await api.post("/v1/vnfs", json=body(), headers=ADMIN)
    assert len({first.json()["id"], other.json()["id"], plain.json()["id"]}) == 3
    assert len(await vnf_ids(memstore)) == 3


async def test_a_different_body_under_the_same_key_is_a_409(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await seeded(memstore)
    first = await api.post("/v1/vnfs", json=body(), headers=keyed(ADMIN, "k-1"))
    assert first.status_code == 202, first.text
    resp = await api.post("/v1/vnfs", json=OTHER, headers=keyed(ADMIN, "k-1"))
    problem = assert_problem(resp, 409, field="Idempotency-Key", detail_has="different request")
    assert problem["type"].endswith("idempotency-key-reused")
    assert await vnf_ids(memstore) == [keys.vnf(first.json()["id"])]


async def test_keys_belong_to_their_caller(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    await seeded(memstore)
    mine = await api.post("/v1/vnfs", json=body(), headers=keyed(ADMIN, "shared"))
    theirs = await api.post("/v1/vnfs", json=OTHER, headers=keyed(OPERATOR, "shared"))
    assert (mine.status_code, theirs.status_code) == (202, 202), theirs.text
    assert mine.json()["id"] != theirs.json()["id"]


async def test_a_key_is_leased_and_forgotten_when_its_lease_ends(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await seeded(memstore)
    first = await api.post("/v1/vnfs", json=body(), headers=keyed(ADMIN, "k-1"))
    (record,), _ = await memstore.get_prefix(keys.IDEMPOTENCY)
    assert record.lease != 0
    stored = json.loads(record.value)
    assert stored["body"]["id"] == first.json()["id"] and stored["status"] == 202
    memstore.expire_lease(record.lease)
    assert (await memstore.get_prefix(keys.IDEMPOTENCY))[0] == []
    later = await api.post("/v1/vnfs", json=OTHER, headers=keyed(ADMIN, "k-1"))
    assert later.status_code == 202 and later.json()["id"] != first.json()["id"]


async def test_concurrent_retries_create_one_vnf(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await seeded(memstore)
    answers = await asyncio.gather(
        *(api.post("/v1/vnfs", json=body(), headers=keyed(ADMIN, "race")) for _ in range(6))
    )
    assert {r.status_code for r in answers} == {202}, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert len(await vnf_ids(memstore)) == 1
    # the losers gave their leases back: one lease holds the one key
    (record,), _ = await memstore.get_prefix(keys.IDEMPOTENCY)
    assert record.lease != 0


async def test_a_refused_request_leaves_no_key_and_a_bad_key_is_refused(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await seeded(memstore)
    limits = {"limits": {"cores": 10}}  # the vIMS sample asks 12
    assert (await api.put("/v1/quotas/acme-nfv", json=limits, headers=ADMIN)).status_code == 200
    refused = await api.post("/v1/vnfs", json=body(), headers=keyed(ADMIN, "k-1"))
    assert_problem(refused, 409, field="tenant")
    assert (await memstore.get_prefix(keys.IDEMPOTENCY))[0] == []
    limits = {"limits": {"cores": 12}}
    assert (await api.put("/v1/quotas/acme-nfv", json=limits, headers=ADMIN)).status_code == 200
    retried = await api.post("/v1/vnfs", json=body(), headers=keyed(ADMIN, "k-1"))
    assert retried.status_code == 202, retried.text
    for bad in ("", "a b", "x" * 256, "k\x7f"):
        resp = await api.post("/v1/vnfs", json=body(), headers=keyed(ADMIN, bad))
        assert_problem(resp, 422, field="Idempotency-Key")
    assert len(await vnf_ids(memstore)) == 1
