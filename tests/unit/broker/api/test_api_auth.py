"""Authentication and roles at the API, the dev token file, and the loopback guard."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from broker import errors
from broker.api import auth
from broker.settings import ApiSettings, BrokerSettings
from broker.store.memory import MemoryStore
from tests.unit.broker.api.apitest_support import (
    ADMIN,
    MEMBER,
    NOROLE,
    OPERATOR,
    SITE,
    assert_problem,
    client_for,
)

PROTECTED = [
    ("GET", "/v1/sites"),
    ("GET", "/v1/sites/edge-1"),
    ("POST", "/v1/sites"),
    ("DELETE", "/v1/sites/edge-1"),
    ("GET", "/v1/events"),
    ("GET", "/v1/leader"),
    ("GET", "/v1/pki/revocations"),
    ("POST", "/v1/pki/revocations"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": "Bearer "},
        {"X-Auth-Token": "wrong"},
    ],
    ids=["none", "wrong", "basic", "empty", "x-auth-wrong"],
)
async def test_401_without_a_valid_token(
    api: httpx.AsyncClient, memstore: MemoryStore, method: str, path: str, headers: dict[str, str]
) -> None:
    resp = await api.request(method, path, headers=headers, json=SITE if method == "POST" else None)
    assert_problem(resp, 401)
    assert resp.headers["www-authenticate"] == "Bearer"
    assert memstore.revision == 1


async def test_x_auth_token_is_accepted(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/sites", headers={"X-Auth-Token": "member-token"})).status_code == 200


ROLE_TABLE = [
    # (headers, method, path, allowed)
    (MEMBER, "GET", "/v1/sites", True),
    (MEMBER, "POST", "/v1/sites", False),
    (MEMBER, "DELETE", "/v1/sites/edge-1", False),
    (MEMBER, "GET", "/v1/events", False),
    (MEMBER, "GET", "/v1/pki/revocations", False),
    (OPERATOR, "GET", "/v1/sites", True),
    (OPERATOR, "GET", "/v1/events", True),
    (OPERATOR, "GET", "/v1/pki/revocations", True),
    (OPERATOR, "POST", "/v1/sites", False),
    (OPERATOR, "DELETE", "/v1/sites/edge-1", False),
    (NOROLE, "GET", "/v1/sites", False),
    (ADMIN, "POST", "/v1/sites", True),
]


@pytest.mark.parametrize(("headers", "method", "path", "allowed"), ROLE_TABLE)
async def test_roles(
    api: httpx.AsyncClient, headers: dict[str, str], method: str, path: str, allowed: bool
) -> None:
    resp = await api.request(method, path, headers=headers, json=SITE if method == "POST" else None)
    if allowed:
        assert resp.status_code in (200, 201), resp.text
    else:
        problem = assert_problem(resp, 403)
        assert "needs one of" in problem["detail"]


async def test_member_post_is_403_and_writes_nothing(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    resp = await api.post("/v1/sites", json=SITE, headers=MEMBER)
    assert_problem(resp, 403, detail_has="max has member")
    assert memstore.revision == 1


async def test_auth_comes_before_validation(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    """An anonymous caller learns nothing about the schema: 401, not 422."""
    resp = await api.post("/v1/sites", json={"bogus": 1})
    assert_problem(resp, 401)


# -- dev mode ---------------------------------------------------------------------------


def test_dev_token_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "token"
    first = auth.DevAuthenticator(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert len(token) >= 32
    second = auth.DevAuthenticator(path)
    assert path.read_text().strip() == token
    assert first._token == second._token


async def test_dev_authenticator_accepts_only_its_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    dev = auth.DevAuthenticator(path)
    token = path.read_text().strip()
    who = await dev.authenticate(token)
    assert who.roles == frozenset({"admin"})
    for wrong in ("", token[:-1], token + "x", "admin"):
        with pytest.raises(errors.AuthError):
            await dev.authenticate(wrong)


async def test_dev_token_end_to_end(tmp_path: Path, memstore: MemoryStore) -> None:
    path = tmp_path / "token"
    dev = auth.DevAuthenticator(path)
    token = path.read_text().strip()
    async with client_for(memstore, dev) as api:
        ok = await api.post("/v1/sites", json=SITE, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 201
        bad = await api.get("/v1/sites", headers={"Authorization": "Bearer nope"})
        assert_problem(bad, 401)


def test_dev_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("secret-token\n")
    os.chmod(path, 0o644)
    with pytest.raises(errors.SettingsError, match="chmod 600"):
        auth.DevAuthenticator(path)


def test_empty_dev_token_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    with pytest.raises(errors.SettingsError, match="empty"):
        auth.DevAuthenticator(path)


def test_from_settings_dev(tmp_path: Path) -> None:
    settings = BrokerSettings(api=ApiSettings(dev_token_file=str(tmp_path / "t")))
    authenticator = auth.from_settings(settings)
    assert isinstance(authenticator, auth.DevAuthenticator)
    assert (tmp_path / "t").exists()


@pytest.mark.parametrize(
    "listen",
    ["127.0.0.1:8080", "127.9.8.7:80", "[::1]:8080", "localhost:8080", "127.0.0.1", "::1"],
)
def test_check_bind_allows_loopback_in_dev(listen: str) -> None:
    auth.check_bind(listen, "dev")


@pytest.mark.parametrize(
    "listen",
    [
        "0.0.0.0:8080",
        "[::]:8080",
        ":8080",
        "10.1.2.3:8080",
        "example.org:80",
        "[2001:db8::1]:8080",
        "128.0.0.1:80",
    ],
)
def test_check_bind_refuses_the_rest_in_dev(listen: str) -> None:
    with pytest.raises(errors.SettingsError) as info:
        auth.check_bind(listen, "dev")
    assert info.value.problems[0].startswith("api.listen:")
    assert "keystone" in info.value.problems[0]


def test_check_bind_allows_anything_with_keystone() -> None:
    auth.check_bind("0.0.0.0:8080", "keystone")
