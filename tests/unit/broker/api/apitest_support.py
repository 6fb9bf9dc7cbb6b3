"""Helpers for the API tests: callers, a store that is down, problem assertions.

Callers are principals of a table authenticator (our own ``Authenticator`` seam), one
token per Meridian role, plus one Keystone user with no Meridian role at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from broker import errors
from broker.api.app import create_app
from broker.api.auth import Principal, Role
from broker.settings import BrokerSettings
from broker.store.protocol import Compare, KeyValue, Lease, Store, TxnOp, TxnResult, WatchEvent

REPLICA = "broker-test-1"


def principal(user: str, *roles: Role) -> Principal:
    return Principal(user=user, project_id=f"p-{user}", roles=frozenset(roles))


TOKENS = {
    "admin-token": principal("alice", "admin"),
    "operator-token": principal("olga", "operator"),
    "member-token": principal("max", "member"),
    "norole-token": principal("nobody"),
}


class TableAuthenticator:
    def __init__(self, table: dict[str, Principal]) -> None:
        self.table = table
        self.seen: list[str] = []

    async def authenticate(self, token: str) -> Principal:
        self.seen.append(token)
        try:
            return self.table[token]
        except KeyError:
            raise errors.AuthError("unknown token") from None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer("admin-token")
OPERATOR = bearer("operator-token")
MEMBER = bearer("member-token")
NOROLE = bearer("norole-token")


class DownStore:
    """A Store whose etcd is gone: every call raises StoreUnavailable (or ``error``)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls = 0
        self.error = error

    def _down(self) -> Exception:
        self.calls += 1
        if self.error is not None:
            return self.error
        return errors.StoreUnavailable("connection refused by 127.0.0.1:2379", retry_after=2.5)

    async def get(self, key: str) -> KeyValue | None:
        raise self._down()

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        raise self._down()

    async def get_range(
        self,
        prefix: str,
        *,
        after: str = "",
        before: str = "",
        limit: int = 0,
        descending: bool = False,
    ) -> tuple[list[KeyValue], int, int]:
        raise self._down()

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        raise self._down()

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        raise self._down()

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp] = ()
    ) -> TxnResult:
        raise self._down()

    async def grant_lease(self, ttl: int) -> Lease:
        raise self._down()

    async def refresh_lease(self, lease_id: int) -> int:
        raise self._down()

    async def revoke_lease(self, lease_id: int) -> None:
        raise self._down()

    def watch_prefix(
        self, prefix: str, *, start_revision: int | None = None
    ) -> AsyncIterator[WatchEvent]:
        raise self._down()

    async def close(self) -> None:
        return None


def client_for(store: Store, auth: Any = None) -> httpx.AsyncClient:
    app = create_app(
        store,
        BrokerSettings(name=REPLICA),
        replica=REPLICA,
        auth=auth if auth is not None else TableAuthenticator(TOKENS),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


def assert_problem(
    resp: httpx.Response, status: int, *, field: str | None = None, detail_has: str = ""
) -> dict[str, Any]:
    """``resp`` is an RFC 9457 problem with ``status`` (and ``field``), returned as JSON."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:meridian:problem:")
    assert body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if field is not None:
        assert body.get("field") == field, body
    if detail_has:
        assert detail_has in body["detail"], body["detail"]
    return body


SITE = {"id": "edge-1", "region": "eu-west", "zone": "z1", "labels": {"tier": "edge"}}
