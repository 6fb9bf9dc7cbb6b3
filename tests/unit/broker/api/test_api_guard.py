"""Attack tests for the API's front door (``broker.api.guard``), driven over raw ASGI.

Raw ASGI, not an HTTP client, so each test can count the body bytes the app pulled: an
anonymous body must never be read, an authenticated one never past the limit. Each test
also asserts that nothing was written (the store's revision) and what the attacker got.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from broker.api.app import create_app
from broker.api.guard import PUBLIC, PUBLIC_BODY_BYTES, Guard
from broker.settings import ApiSettings, BrokerSettings
from broker.store.memory import MemoryStore
from tests.unit.broker.api.apitest_support import REPLICA, TOKENS, TableAuthenticator

LIMIT = 64 * 1024
CHUNK = 16 * 1024


class Sent:
    """What a raw ASGI call produced, and how many body bytes the app pulled."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.pulled = 0

    def json(self) -> Any:
        return json.loads(self.body)

    async def send(self, message: dict[str, Any]) -> None:
        """The ASGI ``send`` that records the response."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")


def _app(store: MemoryStore, auth: TableAuthenticator | None = None) -> FastAPI:
    settings = BrokerSettings(name=REPLICA, api=ApiSettings(max_body_bytes=LIMIT))
    return create_app(store, settings, replica=REPLICA, auth=auth or TableAuthenticator(TOKENS))


def _chunks(total: int) -> Iterator[bytes]:
    # malformed JSON, as an attacker would send it
    while total > 0:
        n = min(CHUNK, total)
        yield b"{" * n
        total -= n


async def call(
    app: FastAPI,
    method: str,
    path: str,
    *,
    token: str | None = None,
    size: int = 0,
    declare: bool = True,
) -> Sent:
    headers = [(b"content-type", b"application/json")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if declare:
        headers.append((b"content-length", str(size).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    out = Sent()
    body = list(_chunks(size)) or [b""]

    async def receive() -> dict[str, Any]:
        if body:
            chunk = body.pop(0)
            out.pulled += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": bool(body)}
        return {"type": "http.disconnect"}

    await app(scope, receive, out.send)
    return out


def _routes() -> list[tuple[str, str]]:
    """Every (method, path) the served OpenAPI document lists, public ones left out."""
    paths: dict[str, dict[str, Any]] = _app(MemoryStore()).openapi()["paths"]
    found = []
    for template, operations in paths.items():
        if template not in PUBLIC:
            path = template.replace("{", "").replace("}", "")  # any value will do
            found += [(m.upper(), path) for m in sorted(operations)]
    return found


ROUTES = _routes()
BODY_ROUTES = [(m, p) for m, p in ROUTES if m in ("POST", "PUT", "PATCH")]


def test_every_route_is_covered() -> None:
    assert len(ROUTES) >= 20 and len(BODY_ROUTES) >= 8, ROUTES


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("token", [None, "forged"])
async def test_anonymous_5mb_of_malformed_json_is_401_and_never_read(
    method: str, path: str, token: str | None
) -> None:
    store = MemoryStore()
    auth = TableAuthenticator(TOKENS)
    sent = await call(_app(store, auth), method, path, token=token, size=5 * 1024 * 1024)
    assert sent.status == 401, sent.body
    assert sent.headers["content-type"] == "application/problem+json"
    assert sent.headers["www-authenticate"] == "Bearer"
    assert sent.headers["connection"] == "close"  # the rest is not drained
    assert sent.json()["type"] == "urn:meridian:problem:unauthorized"
    assert sent.pulled == 0  # not one byte of the body was read
    assert store.revision == 1  # nothing written
    assert auth.seen == ([] if token is None else ["forged"])


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
async def test_declared_oversize_body_is_413_before_reading(method: str, path: str) -> None:
    store = MemoryStore()
    sent = await call(_app(store), method, path, token="admin-token", size=200 * 1024 * 1024)
    assert sent.status == 413, sent.body
    problem = sent.json()
    assert problem["type"] == "urn:meridian:problem:too-large" and problem["field"] == "body"
    assert str(LIMIT) in problem["detail"]
    assert sent.pulled == 0
    assert store.revision == 1


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
async def test_chunked_oversize_body_is_413_while_streaming(method: str, path: str) -> None:
    store = MemoryStore()
    size = 50 * 1024 * 1024
    sent = await call(_app(store), method, path, token="admin-token", size=size, declare=False)
    assert sent.status == 413, sent.body
    assert sent.headers["connection"] == "close"
    assert sent.pulled <= LIMIT + CHUNK  # stopped at the first chunk past the limit
    assert store.revision == 1


async def test_a_body_within_the_limit_reaches_the_route() -> None:
    store = MemoryStore()
    sent = await call(_app(store), "POST", "/v1/sites", token="admin-token", size=LIMIT)
    assert sent.status == 422 and sent.json()["field"] == "body"  # malformed, but read
    assert store.revision == 1


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/openapi.json"])
async def test_public_paths_take_a_few_kib_at_most(path: str) -> None:
    store = MemoryStore()
    sent = await call(_app(store), "GET", path, size=5 * 1024 * 1024, declare=False)
    assert sent.status == 413
    assert sent.pulled <= PUBLIC_BODY_BYTES + CHUNK
    ok = await call(_app(store), "GET", path)
    assert ok.status == 200


async def test_the_route_uses_the_guards_principal_without_asking_again() -> None:
    store = MemoryStore()
    auth = TableAuthenticator(TOKENS)
    sent = await call(_app(store, auth), "GET", "/v1/sites", token="member-token")
    assert sent.status == 200
    assert auth.seen == ["member-token"]  # one validation per request, not two


async def test_a_body_that_stalls_is_408_and_the_connection_closed() -> None:
    """A sender that stops mid-body holds nothing: after ``body_idle`` without a byte the
    guard answers 408 (Connection: close) and the route never runs."""
    ran: list[bool] = []

    async def route(scope: Any, receive: Any, send: Any) -> None:
        ran.append(True)

    guard = Guard(route, auth=TableAuthenticator(TOKENS), max_body_bytes=LIMIT, body_idle=0.2)
    scope = {
        "type": "http", "method": "POST", "path": "/v1/sites", "query_string": b"",
        "headers": [(b"authorization", b"Bearer admin-token")],
    }
    sent = Sent()
    first = [{"type": "http.request", "body": b"{" * CHUNK, "more_body": True}]

    async def receive() -> dict[str, Any]:
        if first:
            return first.pop()
        await asyncio.Event().wait()  # the rest never comes
        raise AssertionError("unreachable")

    started = time.monotonic()
    await guard(scope, receive, sent.send)
    assert time.monotonic() - started < 5
    assert sent.status == 408 and sent.headers["connection"] == "close"
    assert sent.json()["type"] == "urn:meridian:problem:body-stalled"
    assert str(CHUNK) in sent.json()["detail"]
    assert ran == []
