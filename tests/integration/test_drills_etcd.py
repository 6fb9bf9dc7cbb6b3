"""A what-if on real etcd writes ``drills/<id>`` and nothing else (invariant 14).

Sites, placed VNFs (records, their claims, desired objects) and a quota key are in etcd;
``POST /v1/drills`` of a region's loss must leave every other key — value and
mod_revision — exactly as it was, while its answer shows the failover decisions.
"""

from __future__ import annotations

import dataclasses

import pytest

from broker.models import codec, objects
from broker.placement import claims as cl
from broker.placement.snapshot import Snapshot
from broker.store import keys
from broker.store.etcd import EtcdStore
from tests.support import drills as D
from tests.support import placement as P
from tests.unit.broker.api.apitest_support import ADMIN, client_for

pytestmark = [pytest.mark.etcd]

SITES = P.regions(2)  # s1-0, s1-1, s2-0, ... in region-1..3


async def seed(store: EtcdStore) -> None:
    await P.seed_store(store, SITES)
    snap = await Snapshot.load(store)
    desc = P.sample("vfirewall")
    raw = P.sample("vfirewall").model_dump(by_alias=True, mode="json")
    for i in range(4):
        placed = D.place(snap, desc, f"fw{i}")
        assert placed is not None
        rec = dataclasses.replace(placed.record, descriptor=raw)
        await store.put(keys.vnf(rec.id), codec.encode(rec))
        for m in rec.members:
            key = keys.desired(m.site, "server", f"{rec.id}-{m.name}")
            await store.put(key, objects.Desired(1, {"project": "p"}).encode())
    for site in snap.order:
        if site.claims:
            await store.put(keys.claims(site.id), cl.encode(site.claims))
    await store.put(f"{keys.QUOTA}acme-nfv/limits", b'{"cores": 100}')


async def everything(store: EtcdStore) -> dict[str, tuple[bytes, int]]:
    kvs, _ = await store.get_prefix("")
    return {kv.key: (kv.value, kv.mod_revision) for kv in kvs}


async def test_whatif_writes_only_under_drills(etcd_store: EtcdStore) -> None:
    await seed(etcd_store)
    before = await everything(etcd_store)
    assert any(k.startswith(keys.CLAIMS) for k in before) and any(
        k.startswith(keys.DESIRED) for k in before
    )
    async with client_for(etcd_store) as api:
        resp = await api.post(
            "/v1/drills",
            json={"mode": "whatif", "scope": {"regions": ["region-1"]}},
            headers=ADMIN,
        )
        assert resp.status_code == 201, resp.text
        doc = resp.json()
        got = await api.get(f"/v1/drills/{doc['id']}", headers=ADMIN)
        assert got.status_code == 200 and got.json()["result"] == doc["result"]
    result = doc["result"]
    assert result["lost_sites"] == ["s1-0", "s1-1"] and result["vnfs"]
    for vnf in result["vnfs"]:
        for r in vnf["replacements"]:
            assert r["site"] not in result["lost_sites"]
    after = await everything(etcd_store)
    assert set(after) - set(before) == {keys.drill(doc["id"])}
    assert {k: after[k] for k in before} == before, "nothing outside drills/ changed"
