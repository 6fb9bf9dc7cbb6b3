"""``POST /v1/vnfs/{id}/failover``: checked against the machines, stored for the controller,
refused with the reason and nothing written (issue 10)."""

from __future__ import annotations

import httpx

from broker.store import keys
from broker.store.memory import MemoryStore
from tests.unit.broker.api.apitest_support import ADMIN, MEMBER, NOROLE
from tests.unit.broker.controllers.test_failover_controller import VNF, seed


async def asked(store: MemoryStore) -> bytes | None:
    kv = await store.get(keys.failover_asked(VNF))
    return None if kv is None else kv.value


async def test_switchover_is_asked_for(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    await seed(memstore)
    resp = await api.post(f"/v1/vnfs/{VNF}/failover", json={"to_site": "s2"}, headers=ADMIN)
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"id": VNF, "asked": "failover", "to_site": "s2"}
    stored = await asked(memstore)
    assert stored is not None and b'"to_site": "s2"' in stored


async def test_refusals_write_nothing(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    await seed(memstore)
    resp = await api.post(f"/v1/vnfs/{VNF}/failover", json={"to_site": "s9"}, headers=ADMIN)
    assert resp.status_code == 422, resp.text
    assert "no ready standby at s9" in resp.json()["detail"]
    resp = await api.post("/v1/vnfs/nope/failover", json={}, headers=ADMIN)
    assert resp.status_code == 404
    resp = await api.post(f"/v1/vnfs/{VNF}/failover", json={"site": "s2"}, headers=ADMIN)
    assert resp.status_code == 422, "unknown fields are refused"
    resp = await api.post(f"/v1/vnfs/{VNF}/failover", json={}, headers=MEMBER)
    assert resp.status_code == 403, "another project's VNF"
    resp = await api.post(f"/v1/vnfs/{VNF}/failover", json={}, headers=NOROLE)
    assert resp.status_code == 403
    assert await asked(memstore) is None
