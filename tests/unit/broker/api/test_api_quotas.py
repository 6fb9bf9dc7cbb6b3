"""``/v1/quotas``: RBAC, validation naming the field, usage, reservations and refusals."""

from __future__ import annotations

import json

import httpx
import pytest

from broker.models import codec
from broker.models.site import SiteSpec
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.unit.broker.api.apitest_support import (
    ADMIN,
    MEMBER,
    NOROLE,
    OPERATOR,
    assert_problem,
)

MINE = "p-max"  # the member's own project (apitest_support.principal)
OTHER = "p-someone-else"


async def set_quota(api: httpx.AsyncClient, tenant: str, body: object) -> httpx.Response:
    return await api.put(f"/v1/quotas/{tenant}", json=body, headers=ADMIN)


async def test_admin_sets_and_everyone_allowed_reads(api: httpx.AsyncClient) -> None:
    resp = await set_quota(api, MINE, {"limits": {"cores": 8}, "sites": {"edge-1": {"cores": 2}}})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["quota"]["limits"] == {"cores": 8}
    assert body["effective"]["limits"]["cores"] == 8
    assert body["effective"]["limits"]["instances"] == 10  # the default
    for headers in (ADMIN, OPERATOR, MEMBER):
        got = await api.get(f"/v1/quotas/{MINE}", headers=headers)
        assert got.status_code == 200 and got.json()["quota"]["sites"] == {"edge-1": {"cores": 2}}


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", f"/v1/quotas/{OTHER}", MEMBER, 403),
        ("GET", f"/v1/quotas/{OTHER}/usage", MEMBER, 403),
        ("POST", f"/v1/quotas/{OTHER}/reservations", MEMBER, 403),
        ("PUT", f"/v1/quotas/{MINE}", MEMBER, 403),
        ("PUT", f"/v1/quotas/{MINE}", OPERATOR, 403),
        ("GET", f"/v1/quotas/{MINE}", NOROLE, 403),
        ("GET", f"/v1/quotas/{MINE}", {}, 401),
        ("PUT", "/v1/quota-classes/gold", OPERATOR, 403),
    ],
)
async def test_who_may_not(
    api: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    body = {"limits": {}} if method == "PUT" else {"deltas": {"cores": 1}}
    resp = await api.request(method, path, headers=headers, json=body)
    assert_problem(resp, status)


@pytest.mark.parametrize(
    ("tenant", "body", "field"),
    [
        (MINE, {"limits": {"cores": -3}}, "limits.cores"),
        (MINE, {"limits": {"cores": 10**13}}, "limits.cores"),
        (MINE, {"limits": {"gpus": 1}}, "limits.gpus"),
        (MINE, {"regions": {"eu": {"ram_mb": "lots"}}}, "regions.eu.ram_mb"),
        (MINE, {"quota": {}}, "quota"),
        ("bad%20tenant", {"limits": {}}, "tenant"),
    ],
)
async def test_bad_limits_are_422_naming_the_field(
    api: httpx.AsyncClient, tenant: str, body: object, field: str
) -> None:
    assert_problem(await set_quota(api, tenant, body), 422, field=field)


async def test_reserve_refusal_names_class_request_and_what_is_left(
    api: httpx.AsyncClient,
) -> None:
    await set_quota(api, MINE, {"limits": {"cores": 4}})
    path = f"/v1/quotas/{MINE}/reservations"
    ok = await api.post(path, json={"deltas": {"cores": 3}, "ttl": 30}, headers=MEMBER)
    assert ok.status_code == 201, ok.text
    refused = await api.post(path, json={"deltas": {"cores": 2}}, headers=MEMBER)
    body = assert_problem(refused, 409, field="deltas.cores", detail_has="1 left")
    assert (body["resource"], body["requested"], body["left"]) == ("cores", 2, 1)
    bad = await api.post(path, json={"deltas": {"cpus": 2}}, headers=MEMBER)
    assert_problem(bad, 422, field="deltas.cpus")
    bad_ttl = await api.post(path, json={"deltas": {"cores": 1}, "ttl": 0}, headers=MEMBER)
    assert_problem(bad_ttl, 422, field="ttl")


async def test_reservation_lifecycle_and_usage(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    spec = SiteSpec(id="edge-1", region="eu")
    await memstore.put(keys.site("edge-1"), codec.encode(spec))
    report = {MINE: {"cores": 5, "networks": 1}}
    await memstore.put(keys.usage("edge-1"), json.dumps(report).encode())
    await set_quota(api, MINE, {"limits": {"cores": 4}})
    path = f"/v1/quotas/{MINE}/reservations"
    body = {"deltas": {"cores": 3}, "idempotency_key": "vnf-1", "site": "edge-1"}
    first = await api.post(path, json=body, headers=OPERATOR)
    again = await api.post(path, json=body, headers=OPERATOR)
    assert first.json()["id"] == again.json()["id"] == "vnf-1"
    committed = await api.post(f"{path}/vnf-1/commit", headers=OPERATOR)
    assert committed.status_code == 200 and committed.json()["state"] == "committed"
    assert (await api.post(f"{path}/vnf-1/commit", headers=OPERATOR)).status_code == 200
    gone = await api.post(f"{path}/nope/commit", headers=OPERATOR)
    assert_problem(gone, 410)
    released = await api.delete(f"{path}/nope", headers=OPERATOR)
    assert released.status_code == 200

    # usage above the new limit: accepted, reported over limit
    assert (await set_quota(api, MINE, {"limits": {"cores": 2}})).json()["over_limit"] == ["cores"]
    usage = (await api.get(f"/v1/quotas/{MINE}/usage", headers=MEMBER)).json()
    cores = next(line for line in usage["global"] if line["resource"] == "cores")
    assert cores == {"resource": "cores", "limit": 2, "used": 3, "reserved": 0, "left": 0,
                     "over_limit": True}
    assert usage["sites"]["edge-1"] == {"used": {"cores": 3}, "reserved": {},
                                        "reported": {"cores": 5}}


async def test_unknown_site_is_422(api: httpx.AsyncClient) -> None:
    resp = await api.post(
        f"/v1/quotas/{MINE}/reservations", json={"deltas": {"cores": 1}, "site": "nowhere"},
        headers=ADMIN,
    )
    assert_problem(resp, 422, field="site")


async def test_quota_classes(api: httpx.AsyncClient) -> None:
    resp = await api.put("/v1/quota-classes/gold", json={"limits": {"cores": 64}}, headers=ADMIN)
    assert resp.status_code == 200 and resp.json()["effective"]["cores"] == 64
    assert_problem(
        await api.put("/v1/quota-classes/gold", json={"limits": {"cores": -7}}, headers=ADMIN),
        422, field="limits.cores",
    )
    await set_quota(api, MINE, {"quota_class": "gold"})
    got = (await api.get(f"/v1/quotas/{MINE}", headers=MEMBER)).json()
    assert got["effective"]["limits"]["cores"] == 64
