"""The broker API in Keystone mode against minicloud's real Keystone.

The API is served for real (uvicorn on a free loopback port, real etcd behind it) with the
authenticator that ``auth.from_settings`` builds from a ``clouds.yaml`` entry — the same
path a production replica takes. The broker validates tokens as its own service user,
which holds nothing but Keystone's ``service`` role (enough for ``GET /v3/auth/tokens``).
Users, passwords and tokens come from Keystone itself; only the counter of validations is
ours, wrapped around the real keystoneauth1 session at the authenticator's seam.

Expiry is real too: a token issued through an application credential that expires in a few
seconds carries that expiry (Keystone caps it, CVE-2022-2447), so no Keystone setting needs
changing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from broker import errors
from broker.api import auth
from broker.api.app import create_app
from broker.devfed.procs import free_port
from broker.settings import ApiSettings, BrokerSettings
from broker.store.etcd import EtcdStore
from siteagent.drivers.openstack_support import connect

from tests.support.minicloud import CLOUD, Minicloud
from tests.unit.broker.api.apitest_support import assert_problem

pytestmark = [pytest.mark.openstack, pytest.mark.slow]

ADMIN_CLOUD = f"{CLOUD}-cloudadmin"
TENANT = "meridian-tenant"
ADMIN_PROJECT = "meridian"  # minicloud's cloud admin's project
OPERATOR_ROLE = "meridian-operator"
UNMAPPED_ROLE = "meridian-test-unmapped"


@dataclass(frozen=True)
class Login:
    user: str
    password: str
    project: str


@dataclass(frozen=True)
class Keystone:
    url: str
    """The identity endpoint, ``.../v3``."""
    broker_clouds: Path
    """A clouds.yaml holding only the broker's service user (``BROKER_CLOUD``)."""
    logins: dict[str, Login]
    project_ids: dict[str, str]


BROKER_CLOUD = "meridian-broker"


@pytest.fixture(scope="module")
def ks(minicloud: Minicloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keystone]:
    """A broker service user, an operator and a user with no Meridian role, made for this run."""
    entries = json.loads(minicloud.clouds_yaml.read_text().split("\n", 1)[1])["clouds"]
    url = entries[CLOUD]["auth"]["auth_url"].rstrip("/")
    admin = connect(cloud=ADMIN_CLOUD)
    suffix = uuid.uuid4().hex[:8]
    made: list[Any] = []
    try:
        tenant = admin.identity.find_project(TENANT, ignore_missing=False)
        service = admin.identity.find_project("service", ignore_missing=False)

        def role(name: str) -> Any:
            found = admin.identity.find_role(name)
            return found if found is not None else admin.identity.create_role(name=name)

        def user(name: str, project: Any, role_name: str) -> Login:
            password = secrets.token_urlsafe(16)
            made.append(
                admin.identity.create_user(
                    name=f"{name}-{suffix}", password=password, domain_id="default"
                )
            )
            admin.identity.assign_project_role_to_user(project, made[-1], role(role_name))
            return Login(f"{name}-{suffix}", password, project.name)

        logins = {
            "broker": user("mtest-broker", service, "service"),
            "operator": user("mtest-operator", tenant, OPERATOR_ROLE),
            "nobody": user("mtest-nobody", tenant, UNMAPPED_ROLE),
            "admin": Login(
                entries[CLOUD]["auth"]["username"],
                entries[CLOUD]["auth"]["password"],
                ADMIN_PROJECT,
            ),
            "member": Login(
                entries[f"{CLOUD}-member"]["auth"]["username"],
                entries[f"{CLOUD}-member"]["auth"]["password"],
                TENANT,
            ),
        }
        broker_login = logins["broker"]
        clouds = tmp_path_factory.mktemp("broker") / "clouds.yaml"
        clouds.write_text(
            json.dumps(
                {
                    "clouds": {
                        BROKER_CLOUD: {
                            "auth_type": "password",
                            "auth": {
                                "auth_url": url,
                                "username": broker_login.user,
                                "password": broker_login.password,
                                "project_name": broker_login.project,
                                "user_domain_name": "Default",
                                "project_domain_name": "Default",
                            },
                        }
                    }
                }
            )
        )
        clouds.chmod(0o600)
        yield Keystone(
            url=url,
            broker_clouds=clouds,
            logins=logins,
            project_ids={TENANT: tenant.id, "service": service.id},
        )
    finally:
        for found in made:
            with contextlib.suppress(Exception):
                admin.identity.delete_user(found)
        admin.close()


def login_session(ks: Keystone, who: str) -> ks_session.Session:
    login = ks.logins[who]
    plugin = v3.Password(
        auth_url=ks.url,
        username=login.user,
        password=login.password,
        project_name=login.project,
        user_domain_name="Default",
        project_domain_name="Default",
    )
    return ks_session.Session(auth=plugin)


async def token_of(ks: Keystone, who: str) -> tuple[str, str]:
    """A fresh project-scoped token of ``who`` from Keystone, and its project id."""
    sess = login_session(ks, who)
    token = await asyncio.to_thread(sess.get_token)
    project = await asyncio.to_thread(sess.get_project_id)
    assert token and project
    return str(token), str(project)


class CountingSession:
    """The real keystoneauth1 session, counting the validations that reach Keystone."""

    def __init__(self, real: auth.TokenSession) -> None:
        self.real = real
        self.validations = 0

    def get(self, url: str, **kwargs: Any) -> Any:
        if url.endswith("/auth/tokens"):
            self.validations += 1
        return self.real.get(url, **kwargs)


def keystone_auth(
    ks: Keystone,
    monkeypatch: pytest.MonkeyPatch,
    *,
    cache_seconds: float = 30.0,
    cache_size: int = 100,
    keystone_url: str = "",
) -> tuple[BrokerSettings, auth.KeystoneAuthenticator, CountingSession]:
    """Settings in keystone mode and the authenticator ``from_settings`` builds from them."""
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(ks.broker_clouds))
    # minicloud's cloud admin works in project "meridian"; the tenant's operators act
    # everywhere (a scoped operator is proven in tests/unit/broker/api/test_api_policy.py)
    rules = ks.broker_clouds.parent / "policy.toml"
    rules.write_text(
        f'admin_project = "{ADMIN_PROJECT}"\n[operators."{TENANT}"]\nregions = ["*"]\n'
    )
    settings = BrokerSettings(
        name="ks-test",
        api=ApiSettings(
            auth="keystone",
            keystone_url=keystone_url or ks.url,
            keystone_cloud=BROKER_CLOUD,
            token_cache_seconds=cache_seconds,
            token_cache_size=cache_size,
            policy_file=str(rules),
        ),
    )
    authenticator = auth.from_settings(settings)
    assert isinstance(authenticator, auth.KeystoneAuthenticator)
    counting = CountingSession(authenticator.session)
    authenticator.session = counting
    return settings, authenticator, counting


@contextlib.asynccontextmanager
async def serving(
    store: EtcdStore, settings: BrokerSettings, authenticator: auth.Authenticator
) -> AsyncIterator[httpx.AsyncClient]:
    """The API on a free loopback port, served by uvicorn, and a client for it."""
    app = create_app(store, settings, replica=settings.name, auth=authenticator)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                assert not task.done(), "uvicorn stopped before it served"
                await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        await task


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


SITE = {"id": "", "region": "region-1", "zone": "zone-1"}


async def test_tokens_map_to_meridian_roles_with_their_project_scope(
    ks: Keystone, etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, authenticator, _ = keystone_auth(ks, monkeypatch)
    tokens = {who: await token_of(ks, who) for who in ("admin", "operator", "member", "nobody")}

    # the principal carries Keystone's user and project, and the mapped roles
    expected = {
        "admin": {"admin", "member", "reader"},  # admin implies member and reader in Keystone
        "operator": {"operator"},
        "member": {"member", "reader"},  # member implies reader in Keystone
        "nobody": set(),
    }
    for who, (token, project) in tokens.items():
        principal = await authenticator.authenticate(token)
        assert principal.user == ks.logins[who].user
        assert principal.project_id == project
        assert principal.roles == frozenset(expected[who]), who

    tenant = ks.project_ids[TENANT]
    other = ks.project_ids["service"]
    site = {**SITE, "id": f"ks-{uuid.uuid4().hex[:8]}"}
    async with serving(etcd_store, settings, authenticator) as api:
        admin, operator, member, nobody = (bearer(tokens[w][0]) for w in expected)
        # admin: writes
        assert (await api.post("/v1/sites", json=site, headers=admin)).status_code == 201
        assert (await api.get("/v1/events", headers=admin)).status_code == 200
        # operator: reads everything, writes nothing
        assert (await api.get("/v1/events", headers=operator)).status_code == 200
        assert (await api.get(f"/v1/quotas/{other}", headers=operator)).status_code == 200
        assert_problem(
            await api.post("/v1/sites", json={**site, "id": "x1"}, headers=operator),
            403,
            detail_has="needs one of: admin",
        )
        # tenant member: sites, and its own project's quota only (OpenStack's X-Auth-Token too)
        assert (await api.get("/v1/sites", headers=member)).status_code == 200
        own = await api.get(f"/v1/quotas/{tenant}", headers={"X-Auth-Token": tokens["member"][0]})
        assert own.status_code == 200, own.text
        assert_problem(await api.get(f"/v1/quotas/{other}", headers=member), 403, detail_has=tenant)
        assert_problem(await api.get("/v1/events", headers=member), 403)
        # a valid token without any Meridian role: authenticated, but refused
        assert_problem(
            await api.get("/v1/sites", headers=nobody), 403, detail_has="no Meridian role"
        )
        # the broker's own service token grants nothing either
        broker_token, _ = await token_of(ks, "broker")
        assert_problem(await api.get("/v1/sites", headers=bearer(broker_token)), 403)


@pytest.mark.parametrize(
    ("token", "asks_keystone"),
    [
        ("garbage", True),
        ("gAAAAAB" + "A" * 180, True),  # shaped like a Fernet token, signed by no one
        (secrets.token_urlsafe(6000), False),  # larger than any Keystone token
        (b"tok\xe9n", False),  # not ASCII: no Keystone token looks like that
    ],
    ids=["word", "fernet-shaped", "oversized", "not-ascii"],
)
async def test_garbage_tokens_get_401(
    token: str | bytes,
    asks_keystone: bool,
    ks: Keystone,
    etcd_store: EtcdStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, authenticator, counting = keystone_auth(ks, monkeypatch)
    async with serving(etcd_store, settings, authenticator) as api:
        resp = await api.get("/v1/sites", headers={"X-Auth-Token": token})
        body = assert_problem(resp, 401)
        assert resp.headers["www-authenticate"] == "Bearer"
        assert "token" in body["detail"]
        assert ("(Keystone: " in body["detail"]) is asks_keystone  # Keystone's own reason
        assert_problem(await api.get("/v1/sites"), 401, detail_has="no token")
    assert counting.validations == int(asks_keystone)
    assert len(authenticator.cache) == 0


async def test_revoked_token_is_refused_once_the_bounded_cache_lets_go(
    ks: Keystone, etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ttl = 5.0
    settings, authenticator, counting = keystone_auth(ks, monkeypatch, cache_seconds=ttl)
    token, _ = await token_of(ks, "member")
    async with serving(etcd_store, settings, authenticator) as api:
        assert (await api.get("/v1/sites", headers=bearer(token))).status_code == 200
        cached_until = time.monotonic() + ttl  # the entry went in before this line
        # the user revokes its own token in Keystone
        revoked = await api_delete_token(ks, token)
        assert revoked.status_code == 204, revoked.text
        # Keystone itself now refuses it (a fresh authenticator, no cache) ...
        _, fresh, _ = keystone_auth(ks, monkeypatch, cache_seconds=0)
        with pytest.raises(errors.AuthError, match="revoked"):
            await fresh.authenticate(token)
        # ... while this replica may trust its cached answer, for at most ``ttl`` seconds
        resp = await api.get("/v1/sites", headers=bearer(token))
        if time.monotonic() < cached_until:
            assert resp.status_code == 200
            assert counting.validations == 1
        await asyncio.sleep(max(0.0, cached_until - time.monotonic()) + 0.1)
        assert_problem(await api.get("/v1/sites", headers=bearer(token)), 401, detail_has="revoked")
        assert counting.validations == 2


async def api_delete_token(ks: Keystone, token: str) -> httpx.Response:
    """``DELETE /v3/auth/tokens``: a user may revoke its own token."""
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.delete(
            f"{ks.url}/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}
        )


async def test_expired_token_gets_401_even_with_a_long_cache(
    ks: Keystone, etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = connect(cloud=f"{CLOUD}-member")  # before keystone_auth points elsewhere
    settings, authenticator, counting = keystone_auth(ks, monkeypatch, cache_seconds=600)
    lifetime = 20.0  # seconds: enough to get a token and use it once on a loaded machine
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=lifetime)
    cred = member.identity.create_application_credential(
        user=member.current_user_id,
        name=f"mtest-expiring-{uuid.uuid4().hex[:8]}",
        expires_at=expires.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    try:
        sess = ks_session.Session(
            auth=v3.ApplicationCredential(
                auth_url=ks.url,
                application_credential_id=cred.id,
                application_credential_secret=cred.secret,
            )
        )
        token = await asyncio.to_thread(sess.get_token)
        async with serving(etcd_store, settings, authenticator) as api:
            assert (await api.get("/v1/sites", headers=bearer(token))).status_code == 200
            assert counting.validations == 1
            left = (expires - datetime.datetime.now(datetime.UTC)).total_seconds()
            assert left > 0, "the machine was too slow to use the token before it expired"
            await asyncio.sleep(left + 1.5)
            resp = await api.get("/v1/sites", headers=bearer(token))
            assert_problem(resp, 401, detail_has="expired")
            assert counting.validations == 2  # the cache let go at the token's expiry
    finally:
        with contextlib.suppress(Exception):
            member.identity.delete_application_credential(member.current_user_id, cred)
        member.close()


async def test_validations_are_cached_briefly_and_the_cache_is_bounded(
    ks: Keystone, etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, authenticator, counting = keystone_auth(ks, monkeypatch, cache_size=2)
    first, second, third = [(await token_of(ks, "member"))[0] for _ in range(3)]
    async with serving(etcd_store, settings, authenticator) as api:
        for _ in range(5):
            assert (await api.get("/v1/sites", headers=bearer(first))).status_code == 200
        assert counting.validations == 1  # four of five answered from the cache
        for token in (second, third):
            assert (await api.get("/v1/sites", headers=bearer(token))).status_code == 200
        assert counting.validations == 3
        assert len(authenticator.cache) == 2  # bounded: the oldest entry went
        assert (await api.get("/v1/sites", headers=bearer(first))).status_code == 200
        assert counting.validations == 4  # so the first token was asked about again


async def test_keystone_unreachable_is_503_that_names_it(
    ks: Keystone, etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v3"  # nothing listens there
    settings, authenticator, counting = keystone_auth(ks, monkeypatch, keystone_url=dead)
    token, _ = await token_of(ks, "member")
    async with serving(etcd_store, settings, authenticator) as api:
        resp = await api.get("/v1/sites", headers=bearer(token))
        body = assert_problem(resp, 503, detail_has="Keystone")
        assert dead in body["detail"]
        assert resp.headers["retry-after"]
    assert counting.validations == 1 and len(authenticator.cache) == 0
