"""Listings that scale: ``/v1/sites`` and ``/v1/events`` in pages with filters and a
stable cursor; no page repeats or skips what existed throughout, however much is written
meanwhile, and a request reads a bounded number of keys."""

from __future__ import annotations

from typing import Any

import httpx

from broker.api.routes import events as events_route
from broker.api.routes import sites as sites_route
from broker.models import codec
from broker.models.event import Event
from broker.models.site import Health, SiteHealth, SiteSpec
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.unit.broker.api.apitest_support import (
    MEMBER,
    OPERATOR,
    TableAuthenticator,
    assert_problem,
    client_for,
)
from tests.unit.broker.api.test_api_policy import CALLERS, EU_OP


async def add_site(store: MemoryStore, sid: str, region: str = "eu", **labels: str) -> None:
    await store.put(keys.site(sid), codec.encode(SiteSpec(id=sid, region=region, labels=labels)))


async def set_health(store: MemoryStore, sid: str, state: Health) -> None:
    verdict = SiteHealth(site=sid, state=state, since_ms=1, decided_by="b")
    await store.put(keys.health(sid), codec.encode(verdict))


async def pages(api: httpx.AsyncClient, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of a listing, following ``next`` (and a cursor parameter)."""
    cursor_param = "cursor" if key == "sites" else "since"
    found: list[dict[str, Any]] = []
    while True:
        resp = await api.get(path, params=params, headers=MEMBER if key == "sites" else OPERATOR)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        found += body[key]
        if body["next"] is None:
            return found
        params = {**params, cursor_param: body["next"]}


async def test_sites_page_by_cursor_in_id_order(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    ids = [f"s{i:03d}" for i in range(25)]
    for sid in reversed(ids):
        await add_site(memstore, sid)
    first = (await api.get("/v1/sites", params={"limit": 10}, headers=MEMBER)).json()
    assert [s["id"] for s in first["sites"]] == ids[:10] and first["next"] == "s009"
    assert [s["id"] for s in await pages(api, "/v1/sites", "sites", limit=10)] == ids
    whole = (await api.get("/v1/sites", headers=MEMBER)).json()
    assert len(whole["sites"]) == 25 and whole["next"] is None


async def test_sites_cursor_is_stable_under_concurrent_writes(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    for i in range(0, 40, 2):
        await add_site(memstore, f"s{i:03d}")
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 5}
    inserted = 1
    while True:
        body = (await api.get("/v1/sites", params=params, headers=MEMBER)).json()
        seen += [s["id"] for s in body["sites"]]
        # between pages: sites appear before and after the cursor, one is deleted ahead
        await add_site(memstore, f"s{inserted:03d}")
        await add_site(memstore, f"a{inserted:03d}")
        inserted += 4
        if body["next"] is None:
            break
        params["cursor"] = body["next"]
    assert len(seen) == len(set(seen)), "a site was listed twice"
    assert seen == sorted(seen)
    assert {f"s{i:03d}" for i in range(0, 40, 2)} <= set(seen), "a site was skipped"
    assert not any(s.startswith("a") for s in seen)  # inserted behind the cursor


async def test_sites_filter_by_health_region_and_label(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    for i in range(30):
        await add_site(
            memstore, f"s{i:02d}", "eu" if i % 2 else "us", tier="edge" if i % 3 else "core"
        )
        if i % 5 == 0:
            await set_health(memstore, f"s{i:02d}", Health.DOWN)
        elif i % 5 == 1:
            await set_health(memstore, f"s{i:02d}", Health.UP)

    async def ids(**params: Any) -> list[str]:
        return [s["id"] for s in await pages(api, "/v1/sites", "sites", limit=3, **params)]

    assert await ids(health="DOWN") == [f"s{i:02d}" for i in range(0, 30, 5)]
    assert await ids(health="UNKNOWN") == [f"s{i:02d}" for i in range(30) if i % 5 > 1]
    assert await ids(region="eu", label=["tier=core"]) == [f"s{i:02d}" for i in (3, 9, 15, 21, 27)]
    assert await ids(region="eu", health="UP", label=["tier=edge"]) == ["s01", "s11"]
    assert await ids(label=["tier=none"]) == []


async def test_bad_site_filters_are_422(api: httpx.AsyncClient) -> None:
    assert_problem(
        await api.get("/v1/sites", params={"label": "tier"}, headers=MEMBER),
        422,
        detail_has="key=value",
    )
    assert_problem(await api.get("/v1/sites", params={"health": "SIDEWAYS"}, headers=MEMBER), 422)
    assert_problem(await api.get("/v1/sites", params={"limit": 0}, headers=MEMBER), 422)


async def test_a_sparse_filter_reads_a_bounded_page(
    api: httpx.AsyncClient, memstore: MemoryStore, monkeypatch: Any
) -> None:
    monkeypatch.setattr(sites_route, "SCAN_MAX", 10)
    for i in range(25):
        await add_site(memstore, f"s{i:02d}", "us" if i != 22 else "eu")
    body = (await api.get("/v1/sites", params={"region": "eu"}, headers=MEMBER)).json()
    assert body["sites"] == [] and body["next"] == "s09"  # examined 10, nothing matched yet
    assert [s["id"] for s in await pages(api, "/v1/sites", "sites", region="eu")] == ["s22"]


async def test_an_operator_pages_only_its_scope(memstore: MemoryStore) -> None:
    for i in range(12):
        await add_site(memstore, f"s{i:02d}", "eu" if i % 3 == 0 else "us")
    async with client_for(memstore, TableAuthenticator(CALLERS)) as api:
        seen, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            body = (await api.get("/v1/sites", params=params, headers=EU_OP)).json()
            seen += [s["id"] for s in body["sites"]]
            if (cursor := body["next"]) is None:
                break
    assert seen == ["s00", "s03", "s06", "s09"]


# -- events -------------------------------------------------------------------------------

BASE = 1_700_000_000_000


async def seed_events(store: MemoryStore, n: int) -> list[Event]:
    made = [
        Event(
            id=f"{BASE + i * 1000:013d}-{i:08x}",
            at_ms=BASE + i * 1000,
            kind="site.down" if i % 4 == 0 else "site.up",
            subject=f"edge-{i % 3}",
            message=f"event {i}",
        )
        for i in range(n)
    ]
    for event in made:
        await store.put(keys.event(event.id), codec.encode(event))
    return made


async def test_events_filter_by_kind_site_and_time(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    made = await seed_events(memstore, 24)

    async def msgs(**params: Any) -> list[int]:
        found = await pages(api, "/v1/events", "events", since="", limit=2, **params)
        return [int(e["message"].split()[1]) for e in found]

    assert await msgs(kind="site.down") == [0, 4, 8, 12, 16, 20]
    assert await msgs(site="edge-1", kind="site.up") == [1, 7, 10, 13, 19, 22]
    assert await msgs(since_ms=BASE + 20_000) == [20, 21, 22, 23]
    assert await msgs(since_ms=BASE + 3000, until_ms=BASE + 5000) == [3, 4, 5]
    assert await msgs(until_ms=BASE - 1) == []
    newest = (
        await api.get("/v1/events", params={"kind": "site.down", "limit": 2}, headers=OPERATOR)
    ).json()
    assert [e["id"] for e in newest["events"]] == [made[16].id, made[20].id]
    older = (
        await api.get(
            "/v1/events",
            params={"kind": "site.down", "limit": 2, "before": newest["next"]},
            headers=OPERATOR,
        )
    ).json()
    assert [e["id"] for e in older["events"]] == [made[8].id, made[12].id]


async def test_events_cursor_is_stable_under_concurrent_inserts(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    made = await seed_events(memstore, 12)
    seen: list[str] = []
    params: dict[str, Any] = {"since": "", "limit": 5}
    for i in range(100):
        body = (await api.get("/v1/events", params=params, headers=OPERATOR)).json()
        seen += [e["id"] for e in body["events"]]
        if i < 2:  # newer events keep arriving while the pages are read
            late = Event(
                id=f"{BASE + 60_000 + i:013d}-late",
                at_ms=BASE + 60_000 + i,
                kind="k",
                subject="s",
                message="late",
            )
            await memstore.put(keys.event(late.id), codec.encode(late))
        if body["next"] is None:
            break
        params["since"] = body["next"]
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert [e.id for e in made] == seen[:12] and len(seen) == 14


async def test_events_scan_is_bounded(
    api: httpx.AsyncClient, memstore: MemoryStore, monkeypatch: Any
) -> None:
    monkeypatch.setattr(events_route, "SCAN_MAX", 5)
    made = await seed_events(memstore, 12)
    body = (
        await api.get("/v1/events", params={"since": "", "kind": "nothing"}, headers=OPERATOR)
    ).json()
    assert body["events"] == [] and body["next"] == made[4].id
