"""``POST /v1/vnfs/{id}/failover``: checked against the machines, stored for the controller,
refused with the reason and nothing written (issue 10)."""

from __future__ import annotations

import httpx

from broker.failover import machine, policy
from broker.models import codec
from broker.models import vnf as model
from broker.settings import BrokerSettings
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


async def test_heal_is_refused_with_nothing_to_heal_then_asked(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await seed(memstore)
    resp = await api.post(f"/v1/vnfs/{VNF}/heal", headers=ADMIN)
    assert resp.status_code == 422, resp.text
    assert "nothing to heal" in resp.json()["detail"]
    assert await asked(memstore) is None
    resp = await api.post(f"/v1/vnfs/{VNF}/heal", headers=MEMBER)
    assert resp.status_code == 403, "another project's VNF"

    # a lost member whose replacement was refused: heal asks for it again
    kv = await memstore.get(keys.vnf(VNF))
    assert kv is not None
    rec = codec.decode(model.VnfRecord, kv.value)
    fw = policy.machines(rec, model.parse(rec.descriptor), BrokerSettings())["fw"]
    fw = machine.step(fw, machine.Lost("fw-0@s1", "site s1 is DOWN"), 1).vnf
    fw = machine.step(fw, machine.PlaceFailed("fw-0@s1", "no site takes it"), 2).vnf
    await memstore.put(keys.failover(VNF), policy.dump({"fw": fw}))
    resp = await api.post(f"/v1/vnfs/{VNF}/heal", headers=ADMIN)
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"id": VNF, "asked": "heal", "members": ["fw-0"]}
    stored = await asked(memstore)
    assert stored is not None and b'"action": "heal"' in stored


async def test_drain_and_undrain_a_site(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    await seed(memstore)
    resp = await api.post("/v1/sites/s1/drain", headers=ADMIN)
    assert resp.status_code == 404, "an unregistered site"
    await memstore.put(keys.site("s1"), b'{"id": "s1", "region": "r1"}')
    resp = await api.post("/v1/sites/s1/drain", headers=MEMBER)
    assert resp.status_code == 403, "admin only"
    assert await memstore.get(keys.drain("s1")) is None
    resp = await api.post("/v1/sites/s1/drain", headers=ADMIN)
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"site": "s1", "draining": True, "was_draining": False, "vnfs": [VNF]}
    assert await memstore.get(keys.drain("s1")) is not None
    resp = await api.post("/v1/sites/s1/undrain", headers=ADMIN)
    assert resp.status_code == 202, resp.text
    assert resp.json()["was_draining"] is True and resp.json()["draining"] is False
    assert await memstore.get(keys.drain("s1")) is None
