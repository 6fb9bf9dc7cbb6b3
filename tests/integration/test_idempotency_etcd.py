"""``POST /v1/vnfs`` under an ``Idempotency-Key`` on real etcd: concurrent retries create
one VNF, a different body is a 409, and the key lives on an etcd lease (its end forgets it).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from broker.store import keys
from broker.store.etcd import EtcdStore
from tests.support import placement as P
from tests.unit.broker.api.apitest_support import ADMIN, assert_problem, client_for
from tests.unit.broker.api.test_api_vnfs import body

pytestmark = [pytest.mark.etcd]


async def test_idempotent_create_on_etcd(etcd_store: EtcdStore) -> None:
    sites = P.regions(2)
    await P.seed_store(etcd_store, sites, P.paris_latency(sites))
    headers = {**ADMIN, "Idempotency-Key": "retry-me"}
    async with client_for(etcd_store) as api:
        answers = await asyncio.gather(
            *(api.post("/v1/vnfs", json=body(), headers=headers) for _ in range(5))
        )
        assert {r.status_code for r in answers} == {202}, [r.text for r in answers]
        assert len({r.json()["id"] for r in answers}) == 1
        vnf_id = answers[0].json()["id"]
        vnfs, _ = await etcd_store.get_prefix(keys.VNFS)
        assert [kv.key for kv in vnfs] == [keys.vnf(vnf_id)]
        other = await api.post("/v1/vnfs", json={**body(), "name": "x"}, headers=headers)
        assert_problem(other, 409, field="Idempotency-Key")
        (record,), _ = await etcd_store.get_prefix(keys.IDEMPOTENCY)
        assert record.lease != 0 and json.loads(record.value)["body"]["id"] == vnf_id
        # the record was written by the VNF's own transaction
        assert record.create_revision == vnfs[0].create_revision
        await etcd_store.revoke_lease(record.lease)
        assert (await etcd_store.get_prefix(keys.IDEMPOTENCY))[0] == []
        fresh = await api.post("/v1/vnfs", json={**body(), "name": "x"}, headers=headers)
        assert fresh.status_code == 202 and fresh.json()["id"] != vnf_id
