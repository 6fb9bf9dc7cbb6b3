"""``/v1/sites/{id}/datapath``: the profile as a generation-numbered desired object."""

from __future__ import annotations

import httpx

from broker.models import codec, objects
from broker.models.event import Event
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.unit.broker.api.apitest_support import ADMIN, MEMBER, OPERATOR, SITE, assert_problem

PROFILE = {
    "hugepages": [{"node": 0, "page_size_kb": 2048, "count": 64}],
    "ovs": {"bridges": [{"name": "br-dp", "datapath_type": "netdev"}]},
}
URL = "/v1/sites/edge-1/datapath"
KEY = keys.desired("edge-1", "datapath", "host")


async def registered(api: httpx.AsyncClient) -> None:
    assert (await api.post("/v1/sites", json=SITE, headers=ADMIN)).status_code == 201


async def desired(store: MemoryStore) -> objects.Desired:
    kv = await store.get(KEY)
    assert kv is not None
    return objects.DATAPATH.decode(kv.value)


async def test_set_numbers_generations_and_unchanged_keeps_one(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await registered(api)
    resp = await api.put(URL, json=PROFILE, headers=ADMIN)
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"site": "edge-1", "generation": 1}
    assert (await desired(memstore)) == objects.Desired(1, PROFILE, False)
    before = memstore.revision
    assert (await api.put(URL, json=PROFILE, headers=ADMIN)).json()["generation"] == 1
    assert memstore.revision == before  # nothing re-sent
    changed = {**PROFILE, "policy": "report"}
    assert (await api.put(URL, json=changed, headers=ADMIN)).json()["generation"] == 2
    assert (await desired(memstore)).spec == changed
    items, _ = await memstore.get_prefix(keys.EVENTS)
    kinds = [codec.decode(Event, kv.value).kind for kv in items]
    assert kinds.count("site.datapath.set") == 2


async def test_show_joins_desired_and_observed(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await registered(api)
    await api.put(URL, json=PROFILE, headers=ADMIN)
    status = objects.Status("datapath", "host", 1, objects.State.READY, "bridge br-dp set")
    await memstore.put(keys.observed("edge-1", "datapath", "host"), status.encode())
    body = (await api.get(URL, headers=MEMBER)).json()
    assert body["generation"] == 1 and body["profile"] == PROFILE
    assert body["observed"]["state"] == "READY"
    assert body["observed"]["message"] == "bridge br-dp set"


async def test_roles_unknown_site_and_bad_shape(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    assert_problem(await api.put(URL, json=PROFILE, headers=ADMIN), 404)
    await registered(api)
    assert_problem(await api.get(URL, headers=ADMIN), 404, detail_has="data-path profile")
    assert (await api.put(URL, json=PROFILE, headers=OPERATOR)).status_code == 403
    assert (await api.put(URL, json=PROFILE, headers=MEMBER)).status_code == 403
    before = memstore.revision
    assert_problem(await api.put(URL, json=[1, 2], headers=ADMIN), 422, field="body")
    assert_problem(await api.put(URL, json={"nics": []}, headers=ADMIN), 422, field="nics")
    assert memstore.revision == before
    assert_problem(await api.put("/v1/sites/Bad_Id/datapath", json={}, headers=ADMIN), 422)
