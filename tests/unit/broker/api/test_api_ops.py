"""Health, metrics, the leader, the store going away, and the error table itself."""

from __future__ import annotations

from pathlib import Path

import httpx
import prometheus_client
import pytest
from fastapi import FastAPI
from prometheus_client import Gauge

from broker import errors
from broker.api import problems
from broker.api.app import create_app
from broker.api.auth import DevAuthenticator
from broker.settings import BrokerSettings
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.unit.broker.api.apitest_support import (
    ADMIN,
    MEMBER,
    OPERATOR,
    SITE,
    TOKENS,
    DownStore,
    TableAuthenticator,
    assert_problem,
    client_for,
)


async def test_healthz_reads_the_store(api: httpx.AsyncClient) -> None:
    resp = await api.get("/healthz")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok" and resp.json()["etcd"] == "ok"


ALL_STORE_ROUTES = [
    ("GET", "/healthz", None),
    ("GET", "/v1/sites", None),
    ("GET", "/v1/sites/edge-1", None),
    ("POST", "/v1/sites", SITE),
    ("DELETE", "/v1/sites/edge-1", None),
    ("GET", "/v1/events", None),
    ("GET", "/v1/leader", None),
    ("GET", "/v1/pki/revocations", None),
    ("POST", "/v1/pki/revocations", {"serial": "1f"}),
]


@pytest.mark.parametrize(("method", "path", "body"), ALL_STORE_ROUTES)
async def test_store_down_is_503_with_retry_after(method: str, path: str, body: object) -> None:
    down = DownStore()
    async with client_for(down) as api:
        resp = await api.request(method, path, json=body, headers=ADMIN)
    problem = assert_problem(resp, 503, detail_has="etcd unreachable")
    assert "retry" in problem["detail"]
    assert problem["type"].endswith(":store-unavailable")
    assert resp.headers["retry-after"] == "3"  # 2.5 s, rounded up
    assert down.calls >= 1


async def test_store_down_through_memorystore_switch(memstore: MemoryStore) -> None:
    async with client_for(memstore) as api:
        memstore.set_unavailable()
        assert_problem(await api.get("/healthz"), 503)
        memstore.set_unavailable(False)
        assert (await api.get("/healthz")).status_code == 200


async def test_no_leader_is_503(api: httpx.AsyncClient) -> None:
    resp = await api.get("/v1/leader", headers=OPERATOR)
    assert_problem(resp, 503, detail_has="no leader elected")
    assert resp.headers["retry-after"] == "1"


async def test_leader_name_and_fence(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    await memstore.put("sites/x", b"{}")  # advance the revision first
    lease = await memstore.grant_lease(5)
    await memstore.put(keys.LEADER, b"broker-b", lease=lease.id)
    kv = await memstore.get(keys.LEADER)
    assert kv is not None
    resp = await api.get("/v1/leader", headers=OPERATOR)
    assert resp.status_code == 200
    assert resp.json()["leader"] == "broker-b"
    assert resp.json()["fence"] == kv.create_revision
    assert_problem(await api.get("/v1/leader", headers=MEMBER), 403)


def sample(registry: prometheus_client.CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_metrics_count_by_route_template_and_status(memstore: MemoryStore) -> None:
    app = create_app(memstore, BrokerSettings(), replica="r", auth=_table())
    registry = app.state.metrics_registry
    async with _client(app) as api:
        await api.post("/v1/sites", json=SITE, headers=ADMIN)
        await api.post("/v1/sites", json=SITE, headers=ADMIN)
        for sid in ("edge-1", "a", "b"):
            await api.get(f"/v1/sites/{sid}", headers=ADMIN)
        await api.get("/no/such/path", headers=ADMIN)
        await api.get("/no/such/path")  # anonymous: refused before any route is matched
        text = (await api.get("/metrics")).text
    count = "meridian_api_requests_total"
    assert sample(registry, count, method="POST", route="/v1/sites", status="201") == 1
    assert sample(registry, count, method="POST", route="/v1/sites", status="409") == 1
    assert sample(registry, count, method="GET", route="/v1/sites/{site_id}", status="200") == 1
    assert sample(registry, count, method="GET", route="/v1/sites/{site_id}", status="404") == 2
    assert sample(registry, count, method="GET", route="unmatched", status="404") == 1
    assert sample(registry, count, method="GET", route="unmatched", status="401") == 1
    assert (
        sample(registry, "meridian_api_request_seconds_count", method="POST", route="/v1/sites")
        == 2
    )
    assert 'route="/v1/sites/{site_id}"' in text and "edge-1" not in text


async def test_each_app_has_its_own_registry(memstore: MemoryStore) -> None:
    one = create_app(memstore, BrokerSettings(), replica="one", auth=_table())
    two = create_app(memstore, BrokerSettings(), replica="two", auth=_table())
    assert one.state.metrics_registry is not two.state.metrics_registry
    Gauge("meridian_gateway_streams", "streams", registry=one.state.metrics_registry).set(7)
    async with _client(one) as api1, _client(two) as api2:
        await api1.get("/healthz")
        text1 = (await api1.get("/metrics")).text
        text2 = (await api2.get("/metrics")).text
    assert "meridian_gateway_streams 7.0" in text1
    assert "meridian_gateway_streams" not in text2
    assert 'route="/healthz"' in text1 and 'route="/healthz"' not in text2
    assert (
        prometheus_client.REGISTRY.get_sample_value(
            "meridian_api_requests_total", {"method": "GET", "route": "/healthz", "status": "200"}
        )
        is None
    )


async def test_openapi_describes_every_route(api: httpx.AsyncClient) -> None:
    resp = await api.get("/openapi.json")
    assert resp.status_code == 200
    paths = resp.json()["paths"]
    for path in (
        "/v1/sites",
        "/v1/sites/{site_id}",
        "/v1/events",
        "/v1/leader",
        "/v1/pki/revocations",
        "/healthz",
        "/metrics",
    ):
        assert path in paths
    site_in = resp.json()["components"]["schemas"]["SiteIn"]
    assert site_in["additionalProperties"] is False


async def test_unknown_path_is_problem_json(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get("/v2/nothing", headers=ADMIN), 404, detail_has="GET /v2/nothing")
    assert_problem(await api.get("/v2/nothing"), 401)  # a scanner learns no paths
    assert_problem(await api.put("/v1/sites", headers=ADMIN), 405)


async def test_unexpected_bug_is_a_500_problem(tmp_path: Path) -> None:
    broken = DownStore(RuntimeError("secret internals"))
    app = create_app(broken, BrokerSettings(), replica="r", auth=DevAuthenticator(tmp_path / "t"))
    token = (tmp_path / "t").read_text().strip()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
        resp = await api.get("/v1/sites", headers={"Authorization": f"Bearer {token}"})
    problem = assert_problem(resp, 500)
    assert "secret internals" not in resp.text and "log" in problem["detail"]


TABLE = [
    (errors.InvalidInput("geo.lat", "too big"), 422, "geo.lat"),
    (errors.NotFound("site", "x"), 404, None),
    (errors.AlreadyExists("site", "x"), 409, None),
    (errors.AuthError("no"), 401, None),
    (errors.Forbidden("no"), 403, None),
    (errors.StoreUnavailable("down", retry_after=0.2), 503, None),
    (errors.Conflict("raced", retry_after=0.0), 409, None),
    (errors.FencedOut("stale", fence=3), 503, None),
    (errors.LeaseExpired("gone"), 500, None),
    (errors.PkiError("bad"), 500, None),
    (errors.BrokerError("bug"), 500, None),
]


@pytest.mark.parametrize(
    ("exc", "status", "field"), TABLE, ids=[type(t[0]).__name__ for t in TABLE]
)
def test_error_table(exc: errors.BrokerError, status: int, field: str | None) -> None:
    resp = problems.from_error(exc)
    assert resp.status_code == status
    assert resp.media_type == "application/problem+json"
    if isinstance(exc, errors.Temporary | errors.FencedOut):
        assert int(resp.headers["retry-after"]) >= 1
    else:
        assert "retry-after" not in resp.headers
    if field:
        assert b'"field":"geo.lat"' in resp.body


def _table() -> TableAuthenticator:
    return TableAuthenticator(TOKENS)


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
