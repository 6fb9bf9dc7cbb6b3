"""``/v1/sites``: registration is atomic and strict; reads join spec, status, health."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from broker.models import codec
from broker.models.event import Event
from broker.models.inventory import Host, HugePages, Inventory, NumaCell, SriovPool
from broker.models.site import Health, SiteHealth, SiteSpec, SiteStatus
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.unit.broker.api.apitest_support import (
    ADMIN,
    MEMBER,
    OPERATOR,
    REPLICA,
    SITE,
    assert_problem,
)


async def events_of(store: MemoryStore) -> list[Event]:
    items, _ = await store.get_prefix(keys.EVENTS)
    return [codec.decode(Event, kv.value) for kv in items]


async def test_register_writes_spec_and_event(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    body = {**SITE, "failure_domains": {"power": "feed-a"}, "geo": {"lat": 48.85, "lon": 2}}
    resp = await api.post("/v1/sites", json=body, headers=ADMIN)
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"] == "/v1/sites/edge-1"
    created = resp.json()
    assert created["id"] == "edge-1" and created["geo"] == {"lat": 48.85, "lon": 2.0}
    assert created["registered_ms"] > 0

    kv = await memstore.get(keys.site("edge-1"))
    assert kv is not None
    spec = codec.decode(SiteSpec, kv.value)
    assert spec.region == "eu-west" and spec.zone == "z1"
    assert spec.failure_domains == {"power": "feed-a"} and spec.labels == {"tier": "edge"}
    assert spec.geo is not None and spec.geo.lat == 48.85

    (event,) = await events_of(memstore)
    assert event.kind == "site.registered" and event.subject == "edge-1"
    assert event.replica == REPLICA and "alice" in event.message


async def test_duplicate_is_409_and_writes_nothing(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    assert (await api.post("/v1/sites", json=SITE, headers=ADMIN)).status_code == 201
    before = memstore.revision
    resp = await api.post("/v1/sites", json={**SITE, "region": "other"}, headers=ADMIN)
    assert_problem(resp, 409, detail_has="edge-1")
    assert memstore.revision == before
    assert len(await events_of(memstore)) == 1
    kv = await memstore.get(keys.site("edge-1"))
    assert kv is not None and codec.decode(SiteSpec, kv.value).region == "eu-west"


async def test_concurrent_registrations_create_once(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    bodies = [{**SITE, "region": f"r{i}"} for i in range(5)]
    resps = await asyncio.gather(*(api.post("/v1/sites", json=b, headers=ADMIN) for b in bodies))
    assert sorted(r.status_code for r in resps) == [201, 409, 409, 409, 409]
    assert len(await events_of(memstore)) == 1


BAD_BODIES: list[tuple[str, dict[str, Any], str, str]] = [
    ("lat too big", {**SITE, "geo": {"lat": 90.5, "lon": 0}}, "geo.lat", "90"),
    ("lat too small", {**SITE, "geo": {"lat": -91, "lon": 0}}, "geo.lat", "-90"),
    ("lon too big", {**SITE, "geo": {"lat": 0, "lon": 180.01}}, "geo.lon", "180"),
    ("lon too small", {**SITE, "geo": {"lat": 0, "lon": -181}}, "geo.lon", "-180"),
    ("lat as string", {**SITE, "geo": {"lat": "45", "lon": 0}}, "geo.lat", "number"),
    ("lon missing", {**SITE, "geo": {"lat": 1}}, "geo.lon", "required"),
    ("unknown field", {**SITE, "colour": "red"}, "colour", "unknown field"),
    ("unknown geo field", {**SITE, "geo": {"lat": 1, "lon": 1, "alt": 3}}, "geo.alt", "lat, lon"),
    ("uppercase id", {**SITE, "id": "Edge-1"}, "id", "DNS label"),
    ("underscore id", {**SITE, "id": "edge_1"}, "id", "DNS label"),
    ("leading dash id", {**SITE, "id": "-edge"}, "id", "DNS label"),
    ("trailing dash id", {**SITE, "id": "edge-"}, "id", "DNS label"),
    ("empty id", {**SITE, "id": ""}, "id", "DNS label"),
    ("long id", {**SITE, "id": "a" * 64}, "id", "DNS label"),
    ("id not a string", {**SITE, "id": 7}, "id", "string"),
    ("no region", {"id": "edge-1"}, "region", "required"),
    ("empty region", {**SITE, "region": ""}, "region", "at least 1"),
    ("label value not str", {**SITE, "labels": {"tier": 1}}, "labels.tier", "string"),
    ("bad label key", {**SITE, "labels": {"bad key": "x"}}, "labels", "bad key"),
    ("failure domains list", {**SITE, "failure_domains": ["a"]}, "failure_domains", "dict"),
]


@pytest.mark.parametrize(
    ("body", "field", "says"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
async def test_bad_bodies_are_422_naming_the_field(
    api: httpx.AsyncClient, memstore: MemoryStore, body: dict[str, Any], field: str, says: str
) -> None:
    resp = await api.post("/v1/sites", json=body, headers=ADMIN)
    problem = assert_problem(resp, 422, field=field, detail_has=says)
    assert problem["errors"][0]["field"] == field
    assert memstore.revision == 1, "nothing was written"


async def test_unknown_field_lists_the_allowed_ones(api: httpx.AsyncClient) -> None:
    resp = await api.post("/v1/sites", json={**SITE, "regoin": "x"}, headers=ADMIN)
    problem = assert_problem(resp, 422, field="regoin")
    assert "allowed: id, region, zone, failure_domains, geo, labels" in problem["detail"]


async def test_every_bad_field_is_reported(api: httpx.AsyncClient) -> None:
    body = {"id": "BAD", "region": "", "geo": {"lat": 100, "lon": 0}}
    problem = assert_problem(await api.post("/v1/sites", json=body, headers=ADMIN), 422)
    assert {e["field"] for e in problem["errors"]} == {"id", "region", "geo.lat"}


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"lat": NaN}', b""])
async def test_body_that_is_not_an_object_is_422(api: httpx.AsyncClient, content: bytes) -> None:
    headers = {**ADMIN, "content-type": "application/json"}
    resp = await api.post("/v1/sites", content=content, headers=headers)
    assert_problem(resp, 422)


async def test_nan_coordinates_are_refused(api: httpx.AsyncClient) -> None:
    content = json.dumps({**SITE, "geo": {"lat": float("nan"), "lon": 0}}).encode()
    headers = {**ADMIN, "content-type": "application/json"}
    resp = await api.post("/v1/sites", content=content, headers=headers)
    assert_problem(resp, 422, field="geo.lat")


async def test_list_joins_status_and_health(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    for sid in ("edge-2", "edge-1"):
        resp = await api.post("/v1/sites", json={**SITE, "id": sid}, headers=ADMIN)
        assert resp.status_code == 201
    status = SiteStatus(
        site="edge-1",
        replica="broker-b",
        session_id="s1",
        protocol="1.2",
        agent_version="0.1.0",
        connected_ms=1000,
        last_heartbeat_ms=2000,
    )
    await memstore.put(keys.sitestatus("edge-1"), codec.encode(status))
    health = SiteHealth(site="edge-1", state=Health.UP, since_ms=1500, decided_by="broker-a")
    await memstore.put(keys.health("edge-1"), codec.encode(health))

    resp = await api.get("/v1/sites", headers=MEMBER)
    assert resp.status_code == 200
    rows = resp.json()["sites"]
    assert [r["id"] for r in rows] == ["edge-1", "edge-2"]
    assert rows[0] == {
        "id": "edge-1",
        "region": "eu-west",
        "zone": "z1",
        "labels": {"tier": "edge"},
        "health": "UP",
        "replica": "broker-b",
        "last_heartbeat_ms": 2000,
        "protocol": "1.2",
    }
    assert rows[1]["health"] == "UNKNOWN" and rows[1]["replica"] is None


async def test_list_is_empty_at_first(api: httpx.AsyncClient) -> None:
    resp = await api.get("/v1/sites", headers=OPERATOR)
    assert resp.status_code == 200 and resp.json()["sites"] == []


async def test_show_has_spec_status_health_and_inventory(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await api.post("/v1/sites", json=SITE, headers=ADMIN)
    resp = await api.get("/v1/sites/edge-1", headers=MEMBER)
    assert resp.status_code == 200
    bare = resp.json()
    assert bare["spec"]["labels"] == {"tier": "edge"}
    assert bare["status"] is None and bare["inventory"] is None
    assert bare["health"]["state"] == "UNKNOWN"

    cell = NumaCell(
        id=0,
        cpus_total=32,
        pcpus_total=24,
        memory_mb=65536,
        pcpus_used=4,
        hugepages=(HugePages(page_size_kb=1048576, total=16, free=10),),
        sriov=(SriovPool(physnet="sriov-a", device="ens1f0", vfs_total=16, vfs_used=6),),
    )
    inventory = Inventory(site="edge-1", hosts=(Host(name="c1", cells=(cell, cell)),))
    await memstore.put(keys.inventory("edge-1"), codec.encode(inventory))
    health = SiteHealth(site="edge-1", state=Health.DOWN, since_ms=5, reason="no heartbeat")
    await memstore.put(keys.health("edge-1"), codec.encode(health))

    full = (await api.get("/v1/sites/edge-1", headers=MEMBER)).json()
    assert full["inventory"] == inventory.summary()
    assert full["inventory"]["pcpus_free"] == 40 and full["inventory"]["sriov_vfs_free"] == 20
    assert full["health"]["state"] == "DOWN" and full["health"]["reason"] == "no heartbeat"


async def test_show_missing_is_404(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get("/v1/sites/nope", headers=ADMIN), 404, detail_has="'nope'")


async def test_show_bad_id_is_422(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get("/v1/sites/Not_A_Label", headers=ADMIN), 422, field="id")


async def test_corrupt_stored_value_is_500_naming_the_key(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await memstore.put(keys.site("edge-9"), b'{"id": "edge-9"}')
    problem = assert_problem(await api.get("/v1/sites", headers=ADMIN), 500)
    assert "sites/edge-9" in problem["detail"]


async def test_delete(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    await api.post("/v1/sites", json=SITE, headers=ADMIN)
    resp = await api.delete("/v1/sites/edge-1", headers=ADMIN)
    assert resp.status_code == 204 and resp.content == b""
    assert await memstore.get(keys.site("edge-1")) is None
    assert [e.kind for e in await events_of(memstore)] == ["site.registered", "site.deleted"]
    assert_problem(await api.get("/v1/sites/edge-1", headers=ADMIN), 404)
    assert_problem(await api.delete("/v1/sites/edge-1", headers=ADMIN), 404)
    assert len(await events_of(memstore)) == 2
