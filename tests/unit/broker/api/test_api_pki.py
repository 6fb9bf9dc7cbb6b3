"""``/v1/pki/revocations``: admin-only, create-once, the key the gateways watch."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from broker.models import codec
from broker.models.event import Event
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.unit.broker.api.apitest_support import ADMIN, MEMBER, OPERATOR, assert_problem


async def test_revoke_writes_the_watched_key_and_an_event(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    resp = await api.post(
        "/v1/pki/revocations", json={"serial": "4F:1A:9C", "reason": "stolen"}, headers=ADMIN
    )
    assert resp.status_code == 201, resp.text
    record = resp.json()
    assert record["serial"] == "4f1a9c" and record["reason"] == "stolen"
    assert record["by"] == "alice" and record["at_ms"] > 0

    kv = await memstore.get(keys.revoked(0x4F1A9C))
    assert kv is not None and json.loads(kv.value) == record
    events, _ = await memstore.get_prefix(keys.EVENTS)
    (event,) = [codec.decode(Event, e.value) for e in events]
    assert event.kind == "pki.revoked" and event.subject == "4f1a9c" and "stolen" in event.message


async def test_revoking_twice_is_409_and_keeps_the_first(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    first = await api.post("/v1/pki/revocations", json={"serial": "0x0abc"}, headers=ADMIN)
    assert first.status_code == 201 and first.json()["serial"] == "abc"
    again = await api.post(
        "/v1/pki/revocations", json={"serial": "ABC", "reason": "x"}, headers=ADMIN
    )
    assert_problem(again, 409, detail_has="abc")
    kv = await memstore.get(keys.revoked(0xABC))
    assert kv is not None and json.loads(kv.value)["reason"] == ""


BAD_SERIALS: list[Any] = ["", "xyz", "-1", "0", "00", "1" * 41, "12 34", 1234, None]


@pytest.mark.parametrize("serial", BAD_SERIALS)
async def test_bad_serials_are_422(
    api: httpx.AsyncClient, memstore: MemoryStore, serial: Any
) -> None:
    resp = await api.post("/v1/pki/revocations", json={"serial": serial}, headers=ADMIN)
    assert_problem(resp, 422, field="serial")
    assert memstore.revision == 1


async def test_unknown_field_and_missing_serial(api: httpx.AsyncClient) -> None:
    resp = await api.post("/v1/pki/revocations", json={"serial": "1", "why": "x"}, headers=ADMIN)
    problem = assert_problem(resp, 422, field="why")
    assert "allowed: serial, reason" in problem["detail"]
    assert_problem(
        await api.post("/v1/pki/revocations", json={}, headers=ADMIN), 422, field="serial"
    )


@pytest.mark.parametrize("who", [OPERATOR, MEMBER])
async def test_only_admin_revokes(
    api: httpx.AsyncClient, memstore: MemoryStore, who: dict[str, str]
) -> None:
    resp = await api.post("/v1/pki/revocations", json={"serial": "1f"}, headers=who)
    assert_problem(resp, 403, detail_has="admin")
    assert await memstore.get(keys.revoked(0x1F)) is None


async def test_list_sorted_by_serial(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    for serial in ("ff", "1a", "100"):
        resp = await api.post("/v1/pki/revocations", json={"serial": serial}, headers=ADMIN)
        assert resp.status_code == 201
    await memstore.put(keys.revoked(0x5), b"not json")  # a bare key still revokes
    resp = await api.get("/v1/pki/revocations", headers=OPERATOR)
    assert resp.status_code == 200
    assert [r["serial"] for r in resp.json()["revocations"]] == ["5", "1a", "ff", "100"]
    assert_problem(await api.get("/v1/pki/revocations", headers=MEMBER), 403)
