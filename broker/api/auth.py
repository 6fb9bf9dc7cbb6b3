"""Who is calling: tokens in, a ``Principal`` with Meridian roles out.

Two authenticators share one Protocol. ``DevAuthenticator`` knows one generated admin
token kept in a 0600 file; because anyone holding that file is admin, ``check_bind``
refuses to serve dev mode beyond loopback. ``KeystoneAuthenticator`` asks Keystone to
validate each token with the broker's own service session and maps Keystone roles to
Meridian's four through the role policy (``policy``); what cannot be a Keystone token
(oversized, not printable ASCII) is refused without a round trip. Invariant: an
unvalidated token never becomes a Principal, and a validated one is trusted for at most
``token_cache_seconds`` (never past its expiry).
Proven against a real Keystone in ``tests/integration/openstack/test_keystone_auth.py``.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import ipaddress
import os
import secrets
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from broker import errors
from broker.api import policy
from broker.api.tokencache import TtlCache
from broker.settings import BrokerSettings

Role = policy.Role
ROLES = policy.ROLES

KEYSTONE_TIMEOUT = 5.0
"""Seconds before one Keystone validation is abandoned (the API then answers 503)."""

MAX_TOKEN_CHARS = 4096
"""Longest token sent to Keystone. Fernet tokens are ~180-250 characters and JWS tokens
well under this; anything longer is refused without a round trip."""


@dataclass(frozen=True, slots=True)
class Principal:
    user: str
    project_id: str
    roles: frozenset[Role]
    scope: policy.Scope = policy.EVERYWHERE
    """Where an operator may act (``policy``); everywhere for every other role."""

    def has_any(self, roles: Iterable[Role]) -> bool:
        return not self.roles.isdisjoint(roles)


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Principal:
        """The caller behind ``token``; raises ``AuthError`` when it is not valid."""
        ...


# -- dev mode -----------------------------------------------------------------------


def default_dev_token_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "meridian" / "dev-token"


def load_or_create_token(path: Path) -> str:
    """Read the dev token from ``path``, creating it (mode 0600) with a new one if missing."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise errors.SettingsError([f"api.dev_token_file: cannot create {path}: {exc}"]) from exc
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    try:
        mode = path.stat().st_mode
        token = path.read_text().strip()
    except OSError as exc:
        raise errors.SettingsError([f"api.dev_token_file: cannot read {path}: {exc}"]) from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise errors.SettingsError(
            [f"api.dev_token_file: {path} is readable by others: chmod 600 it"]
        )
    if not token:
        raise errors.SettingsError([f"api.dev_token_file: {path} is empty: delete it"])
    return token


class DevAuthenticator:
    """One admin token, generated once and kept in ``token_file`` (mode 0600)."""

    PRINCIPAL = Principal(user="dev-admin", project_id="dev", roles=frozenset({"admin"}))

    def __init__(self, token_file: Path | str) -> None:
        self.token_file = Path(token_file)
        self._token = load_or_create_token(self.token_file).encode()

    async def authenticate(self, token: str) -> Principal:
        if not hmac.compare_digest(token.encode(), self._token):
            raise errors.AuthError("the token is not the dev admin token")
        return self.PRINCIPAL


def check_bind(listen: str, auth_mode: str) -> None:
    """Refuse dev mode on anything but loopback: the dev token is a shared admin key."""
    if auth_mode != "dev":
        return
    host = listen.strip("[]")
    try:
        ipaddress.ip_address(host)  # a bare address, no port
    except ValueError:
        host = listen.rpartition(":")[0].strip("[]") if ":" in listen else listen
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise errors.SettingsError(
        [
            (
                f"api.listen: {listen!r} is not a loopback address; dev auth (one shared "
                "admin token) may only bind 127.0.0.0/8, ::1 or localhost — set api.auth = "
                '"keystone" to serve other hosts'
            )
        ]
    )


# -- keystone mode ------------------------------------------------------------------


class TokenSession(Protocol):
    """The part of ``keystoneauth1.session.Session`` the authenticator uses."""

    def get(self, url: str, **kwargs: Any) -> Any: ...


def _check_shape(token: str) -> None:
    """Refuse what cannot be a Keystone token before asking Keystone about it."""
    if len(token) > MAX_TOKEN_CHARS:
        raise errors.AuthError(
            f"the token is {len(token)} characters long; Keystone tokens have at most "
            f"{MAX_TOKEN_CHARS}"
        )
    if not all("!" <= ch <= "~" for ch in token):
        raise errors.AuthError("the token has characters no Keystone token has (printable ASCII)")


def _keystone_says(resp: Any) -> str:
    """Keystone's own reason from an error body, as `` (Keystone: ...)``, or nothing."""
    try:
        message = resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return ""
    if not isinstance(message, str) or not message.strip():
        return ""
    return f" (Keystone: {' '.join(message.split())[:200]})"


def _expires_in(token: dict[str, Any]) -> float | None:
    raw = token.get("expires_at")
    if not isinstance(raw, str):
        return None
    try:
        at = datetime.datetime.fromisoformat(raw)
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=datetime.UTC)
    return at.timestamp() - time.time()


class KeystoneAuthenticator:
    """Validates Keystone tokens (``GET /v3/auth/tokens``) with the broker's service session.

    ``session`` is a keystoneauth1 Session authenticated as the broker's service user
    (see ``keystone_session``); ``keystone_url`` is the identity endpoint, with or without
    ``/v3``, or empty to find it in the service catalog.
    """

    def __init__(
        self,
        session: TokenSession,
        *,
        keystone_url: str = "",
        cache_seconds: float = 30.0,
        cache_size: int = 10_000,
        timeout: float = KEYSTONE_TIMEOUT,
        cache: TtlCache[Principal] | None = None,
        role_policy: policy.Policy | None = None,
    ) -> None:
        self.session = session
        self.policy = role_policy if role_policy is not None else policy.Policy()
        self.timeout = timeout
        self.cache = cache if cache is not None else TtlCache(cache_size, cache_seconds)
        base = keystone_url.rstrip("/")
        if base and not base.endswith("/v3"):
            base += "/v3"
        self.url = f"{base}/auth/tokens" if base else "/auth/tokens"
        self._where = base or "the catalog's identity endpoint"

    async def authenticate(self, token: str) -> Principal:
        if not token:
            raise errors.AuthError("no token")
        _check_shape(token)
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        body = await asyncio.to_thread(self._validate, token)
        principal = self._principal(body)
        self.cache.put(key, principal, ttl=_expires_in(body))
        return principal

    def _validate(self, token: str) -> dict[str, Any]:
        """Runs in a worker thread: keystoneauth1 is synchronous."""
        kwargs: dict[str, Any] = {
            "headers": {"X-Subject-Token": token},
            "raise_exc": False,
            "timeout": self.timeout,
        }
        if not self.url.startswith("http"):
            kwargs["endpoint_filter"] = {"service_type": "identity", "interface": "public"}
        try:
            resp = self.session.get(self.url, **kwargs)
        except Exception as exc:  # keystoneauth1's connection/discovery failures
            raise errors.Temporary(
                f"cannot validate tokens: Keystone at {self._where} failed: {exc}",
                retry_after=5.0,
            ) from exc
        status = int(resp.status_code)
        if status in (400, 401, 404):
            raise errors.AuthError(
                "the token is expired, revoked or not a Keystone token" + _keystone_says(resp)
            )
        if status == 403:
            raise errors.BrokerError(
                "Keystone refused to let the broker's service user validate tokens: "
                "give it the service or admin role"
            )
        if status >= 400:
            raise errors.Temporary(
                f"Keystone at {self._where} answered {status} while validating a token",
                retry_after=5.0,
            )
        try:
            body = resp.json()
            token_body = body["token"]
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.BrokerError("Keystone returned a token body without 'token'") from exc
        if not isinstance(token_body, dict):
            raise errors.BrokerError("Keystone returned a malformed token body")
        return token_body

    def _principal(self, token: dict[str, Any]) -> Principal:
        user = token.get("user") or {}
        project = token.get("project") or {}
        roles = [str(r.get("name", "")) for r in token.get("roles") or () if isinstance(r, dict)]
        project_id = str(project.get("id", ""))
        grant = self.policy.grant(project_id, str(project.get("name", "")), roles)
        return Principal(
            user=str(user.get("name") or user.get("id") or "?"),
            project_id=project_id,
            roles=grant.roles,
            scope=grant.scope,
        )


def from_settings(settings: BrokerSettings) -> Authenticator:
    """The authenticator ``settings.api.auth`` asks for, ready to use."""
    api = settings.api
    if api.auth == "dev":
        return DevAuthenticator(api.dev_token_file or default_dev_token_file())
    from broker.api import keystone

    session = keystone.service_session(api.keystone_url, api.keystone_cloud)
    return KeystoneAuthenticator(
        session,
        keystone_url=api.keystone_url,
        cache_seconds=api.token_cache_seconds,
        cache_size=api.token_cache_size,
        role_policy=policy.load(api.policy_file),
    )
