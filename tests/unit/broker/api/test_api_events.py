"""``/v1/events``: sorted by id, newest last; ``since`` pages forward; ``subject`` filters."""

from __future__ import annotations

import httpx

from broker.models import codec
from broker.models.event import Event
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.unit.broker.api.apitest_support import MEMBER, OPERATOR, assert_problem


async def seed(store: MemoryStore, n: int) -> list[Event]:
    made = []
    for i in range(n):
        at = 1_700_000_000_000 + i * 1000
        # written out of order: the listing must sort by id, not by write order
        event = Event(
            id=f"{at:013d}-{i:08x}",
            at_ms=at,
            kind="site.up",
            subject=f"edge-{i % 3}",
            message=f"event {i}",
        )
        made.append(event)
    for event in reversed(made):
        await store.put(keys.event(event.id), codec.encode(event))
    return made


async def test_newest_last_and_limit_keeps_the_newest(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    made = await seed(memstore, 10)
    resp = await api.get("/v1/events", headers=OPERATOR)
    assert resp.status_code == 200
    assert [e["id"] for e in resp.json()["events"]] == [e.id for e in made]
    last3 = (await api.get("/v1/events", params={"limit": 3}, headers=OPERATOR)).json()
    assert [e["message"] for e in last3["events"]] == ["event 7", "event 8", "event 9"]


async def test_since_pages_forward(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    made = await seed(memstore, 10)
    page = (
        await api.get("/v1/events", params={"since": made[2].id, "limit": 4}, headers=OPERATOR)
    ).json()["events"]
    assert [e["id"] for e in page] == [e.id for e in made[3:7]]
    rest = (await api.get("/v1/events", params={"since": made[9].id}, headers=OPERATOR)).json()
    assert rest["events"] == []


async def test_subject_filters(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    await seed(memstore, 9)
    resp = await api.get("/v1/events", params={"subject": "edge-1"}, headers=OPERATOR)
    found = resp.json()["events"]
    assert [e["message"] for e in found] == ["event 1", "event 4", "event 7"]
    assert all(e["subject"] == "edge-1" for e in found)


async def test_events_from_writes_show_up(api: httpx.AsyncClient) -> None:
    from tests.unit.broker.api.apitest_support import ADMIN, SITE

    await api.post("/v1/sites", json=SITE, headers=ADMIN)
    await api.delete("/v1/sites/edge-1", headers=ADMIN)
    found = (await api.get("/v1/events", params={"subject": "edge-1"}, headers=ADMIN)).json()
    assert [e["kind"] for e in found["events"]] == ["site.registered", "site.deleted"]


async def test_bad_limit_is_422(api: httpx.AsyncClient) -> None:
    for limit in ("0", "1001", "ten"):
        resp = await api.get("/v1/events", params={"limit": limit}, headers=OPERATOR)
        assert_problem(resp, 422, field="limit")


async def test_member_may_not_read_events(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get("/v1/events", headers=MEMBER), 403, detail_has="operator")
