"""Keystone mode at its seam: a fake keystoneauth1 session stands in for Keystone.

No real Keystone runs in unit tests (the integration tier brings one up); these tests
check what the broker does with Keystone's answers — the role mapping, 401 for expired or
revoked tokens, the bounded cache and its TTL — and how it builds its service session.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from broker import errors
from broker.api import auth, keystone
from broker.api.tokencache import TtlCache
from broker.settings import ApiSettings, BrokerSettings
from broker.store.memory import MemoryStore
from tests.unit.broker.api.apitest_support import SITE, assert_problem, client_for


class FakeResponse:
    def __init__(self, status: int, body: Any = None) -> None:
        self.status_code = status
        self._body = body

    def json(self) -> Any:
        if self._body is None:
            raise ValueError("no body")
        return self._body


def token_body(
    *roles: str, expires_in: float = 3600, user: str = "ursula", project: str = "nfv"
) -> dict[str, Any]:
    at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=expires_in)
    project_id = "proj-1" if project == "nfv" else f"id-{project}"
    return {
        "token": {
            "user": {"id": "u1", "name": user, "domain": {"id": "default"}},
            "project": {"id": project_id, "name": project},
            "roles": [{"id": f"r-{r}", "name": r} for r in roles],
            "expires_at": at.isoformat().replace("+00:00", "Z"),
        }
    }


class FakeSession:
    """Answers ``GET .../auth/tokens`` from a table of tokens, recording every call."""

    def __init__(self, tokens: dict[str, FakeResponse] | None = None) -> None:
        self.tokens = tokens or {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: Exception | None = None

    def get(self, url: str, **kwargs: Any) -> FakeResponse:
        self.calls.append((url, kwargs))
        if self.fail is not None:
            raise self.fail
        token = kwargs["headers"]["X-Subject-Token"]
        return self.tokens.get(token, FakeResponse(404, {"error": {"code": 404}}))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("project", "keystone_roles", "meridian"),
    [
        # in the admin project (default: "admin"), admins and operators reach everything
        ("admin", ["admin"], {"admin"}),
        ("admin", ["Admin"], {"admin"}),
        ("admin", ["meridian-operator"], {"operator"}),
        ("admin", ["operator"], {"operator"}),
        # anywhere else: a project admin is that project's member, an operator without
        # a configured scope only a reader, and Keystone's reader only reads
        ("nfv", ["admin"], {"member"}),
        ("nfv", ["operator"], {"reader"}),
        ("nfv", ["member"], {"member"}),
        ("nfv", ["reader"], {"reader"}),
        ("nfv", ["member", "reader", "meridian-operator"], {"member", "reader"}),
        ("nfv", ["load-balancer_member", "heat_stack_owner"], set()),
        ("nfv", [], set()),
    ],
)
async def test_role_mapping(project: str, keystone_roles: list[str], meridian: set[str]) -> None:
    body = token_body(*keystone_roles, project=project)
    session = FakeSession({"t": FakeResponse(200, body)})
    ks = auth.KeystoneAuthenticator(session, keystone_url="http://keystone.test:5000")
    who = await ks.authenticate("t")
    assert who.roles == frozenset(meridian)
    assert who.user == "ursula" and who.project_id == body["token"]["project"]["id"]


@pytest.mark.parametrize("url", ["http://k:5000", "http://k:5000/", "http://k:5000/v3"])
async def test_validates_with_subject_token(url: str) -> None:
    session = FakeSession({"t": FakeResponse(200, token_body("member"))})
    await auth.KeystoneAuthenticator(session, keystone_url=url).authenticate("t")
    ((called, kwargs),) = session.calls
    assert called == "http://k:5000/v3/auth/tokens"
    assert kwargs["headers"] == {"X-Subject-Token": "t"}
    assert kwargs["raise_exc"] is False and kwargs["timeout"] > 0


async def test_catalog_endpoint_when_no_url() -> None:
    session = FakeSession({"t": FakeResponse(200, token_body("member"))})
    await auth.KeystoneAuthenticator(session).authenticate("t")
    ((called, kwargs),) = session.calls
    assert called == "/auth/tokens"
    assert kwargs["endpoint_filter"]["service_type"] == "identity"


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_expired_or_revoked_is_auth_error(status: int) -> None:
    session = FakeSession({"t": FakeResponse(status, {"error": {}})})
    with pytest.raises(errors.AuthError) as info:
        await auth.KeystoneAuthenticator(session, keystone_url="http://k").authenticate("t")
    assert not isinstance(info.value, errors.Forbidden)


async def test_keystones_reason_is_passed_on() -> None:
    said = {"error": {"code": 404, "message": "Could not recognize\nFernet token"}}
    session = FakeSession({"t": FakeResponse(404, said)})
    with pytest.raises(errors.AuthError, match=r"\(Keystone: Could not recognize Fernet token\)"):
        await auth.KeystoneAuthenticator(session, keystone_url="http://k").authenticate("t")


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("x" * (auth.MAX_TOKEN_CHARS + 1), "characters long"),
        ("gAAAA\u00e9", "printable ASCII"),
        ("two words", "printable ASCII"),
        ("tab\there", "printable ASCII"),
    ],
)
async def test_impossible_tokens_never_reach_keystone(token: str, says: str) -> None:
    session = FakeSession()
    with pytest.raises(errors.AuthError, match=says):
        await auth.KeystoneAuthenticator(session, keystone_url="http://k").authenticate(token)
    assert session.calls == []


async def test_longest_plausible_token_is_asked_about() -> None:
    token = "x" * auth.MAX_TOKEN_CHARS
    session = FakeSession({token: FakeResponse(200, token_body("member"))})
    who = await auth.KeystoneAuthenticator(session, keystone_url="http://k").authenticate(token)
    assert who.roles == {"member"} and len(session.calls) == 1


async def test_keystone_down_is_temporary() -> None:
    session = FakeSession()
    session.fail = ConnectionError("connection refused")
    with pytest.raises(errors.Temporary, match="Keystone"):
        await auth.KeystoneAuthenticator(session, keystone_url="http://k").authenticate("t")
    session.fail = None
    session.tokens["t"] = FakeResponse(502)
    with pytest.raises(errors.Temporary, match="502"):
        await auth.KeystoneAuthenticator(session, keystone_url="http://k").authenticate("t")


async def test_cache_hits_skip_keystone_until_ttl() -> None:
    clock = Clock()
    session = FakeSession({"t": FakeResponse(200, token_body("admin"))})
    cache: TtlCache[auth.Principal] = TtlCache(10, 30.0, clock=clock)
    ks = auth.KeystoneAuthenticator(session, keystone_url="http://k", cache=cache)
    await ks.authenticate("t")
    clock.now += 29.9
    await ks.authenticate("t")
    assert len(session.calls) == 1
    clock.now += 0.2
    await ks.authenticate("t")
    assert len(session.calls) == 2


async def test_revoked_after_ttl_is_refused() -> None:
    clock = Clock()
    session = FakeSession({"t": FakeResponse(200, token_body("admin"))})
    cache: TtlCache[auth.Principal] = TtlCache(10, 5.0, clock=clock)
    ks = auth.KeystoneAuthenticator(session, keystone_url="http://k", cache=cache)
    await ks.authenticate("t")
    session.tokens["t"] = FakeResponse(404)  # revoked in Keystone
    clock.now += 6
    with pytest.raises(errors.AuthError):
        await ks.authenticate("t")


async def test_failures_are_not_cached() -> None:
    session = FakeSession()
    ks = auth.KeystoneAuthenticator(session, keystone_url="http://k")
    for _ in range(2):
        with pytest.raises(errors.AuthError):
            await ks.authenticate("bad")
    assert len(session.calls) == 2
    assert len(ks.cache) == 0


async def test_never_cached_past_expiry() -> None:
    session = FakeSession({"t": FakeResponse(200, token_body("admin", expires_in=-5))})
    ks = auth.KeystoneAuthenticator(session, keystone_url="http://k", cache_seconds=300)
    await ks.authenticate("t")
    await ks.authenticate("t")
    assert len(session.calls) == 2


async def test_cache_is_bounded() -> None:
    session = FakeSession({f"t{i}": FakeResponse(200, token_body("member")) for i in range(5)})
    ks = auth.KeystoneAuthenticator(session, keystone_url="http://k", cache_size=3)
    for i in range(5):
        await ks.authenticate(f"t{i}")
    assert len(ks.cache) == 3
    await ks.authenticate("t4")  # still cached
    assert len(session.calls) == 5
    await ks.authenticate("t0")  # evicted
    assert len(session.calls) == 6


def test_ttl_cache_is_lru_and_expires() -> None:
    clock = Clock()
    cache: TtlCache[int] = TtlCache(2, 10.0, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now most recent
    cache.put("c", 3)  # evicts b
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    cache.put("d", 4, ttl=100.0)  # capped at the cache's ttl; evicts a
    assert cache.get("a") is None
    clock.now += 10.0
    assert cache.get("d") is None and cache.get("c") is None and len(cache) == 0
    off: TtlCache[int] = TtlCache(0, 10.0)
    off.put("a", 1)
    assert off.get("a") is None


async def test_keystone_mode_through_the_api(memstore: MemoryStore) -> None:
    session = FakeSession(
        {
            "admin": FakeResponse(200, token_body("admin", project="admin")),
            "project-admin": FakeResponse(200, token_body("admin")),
            "member": FakeResponse(200, token_body("member")),
            "outsider": FakeResponse(200, token_body("heat_stack_owner")),
        }
    )
    ks = auth.KeystoneAuthenticator(session, keystone_url="http://k")
    async with client_for(memstore, ks) as api:

        def h(t: str) -> dict[str, str]:
            return {"X-Auth-Token": t}

        assert (await api.post("/v1/sites", json=SITE, headers=h("admin"))).status_code == 201
        assert (await api.get("/v1/sites", headers=h("member"))).status_code == 200
        assert_problem(await api.post("/v1/sites", json=SITE, headers=h("member")), 403)
        assert_problem(await api.post("/v1/sites", json=SITE, headers=h("project-admin")), 403)
        assert_problem(await api.get("/v1/sites", headers=h("outsider")), 403)
        assert_problem(await api.get("/v1/sites", headers=h("expired")), 401)
        session.fail = ConnectionError("refused")
        resp = await api.get("/v1/sites", headers=h("fresh"))
        assert_problem(resp, 503, detail_has="Keystone")
        assert resp.headers["retry-after"] == "5"


CLOUDS = """
clouds:
  meridian-service:
    auth:
      auth_url: http://keystone.test:5000/v3
      username: meridian
      password: s3cret
      project_name: service
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
"""


def test_service_session_from_clouds_yaml(tmp_path: Path) -> None:
    path = tmp_path / "clouds.yaml"
    path.write_text(CLOUDS)
    session = keystone.service_session("", "meridian-service", paths=[path])
    assert session.auth is not None
    assert getattr(session.auth, "auth_url", None) == "http://keystone.test:5000/v3"


def test_service_session_problems_are_settings_errors(tmp_path: Path) -> None:
    path = tmp_path / "clouds.yaml"
    path.write_text(CLOUDS)
    with pytest.raises(errors.SettingsError, match="no cloud 'other'"):
        keystone.service_session("", "other", paths=[path])
    path.write_text("clouds: {x: {auth: {username: u}}}")
    with pytest.raises(errors.SettingsError, match="auth_url"):
        keystone.service_session("", "x", paths=[path])


def test_from_settings_keystone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "clouds.yaml"
    path.write_text(CLOUDS)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    settings = BrokerSettings(
        api=ApiSettings(
            auth="keystone",
            keystone_cloud="meridian-service",
            keystone_url="http://keystone.test:5000",
            token_cache_size=7,
        )
    )
    ks = auth.from_settings(settings)
    assert isinstance(ks, auth.KeystoneAuthenticator)
    assert ks.url == "http://keystone.test:5000/v3/auth/tokens"
    assert ks.cache.size == 7
