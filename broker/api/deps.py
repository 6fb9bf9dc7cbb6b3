"""What every route needs: the replica's state, and the caller with the right role.

The role policy lives here and nowhere else:

=====================================  ==============================
request                                roles
=====================================  ==============================
GET sites                              admin, operator, member
GET events, leader, revocations        admin, operator
POST/DELETE sites, POST revocations    admin
/healthz, /metrics                     none (probes and scrapers)
=====================================  ==============================

Invariant: a route that declares one of the dependencies below never runs for a caller
without a validated token (401) or without one of its roles (403).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from broker import errors
from broker.api.auth import Authenticator, Principal, Role
from broker.settings import BrokerSettings
from broker.store.protocol import Store

READ_SITES: tuple[Role, ...] = ("admin", "operator", "member")
READ_ALL: tuple[Role, ...] = ("admin", "operator")
WRITE: tuple[Role, ...] = ("admin",)


@dataclass(frozen=True, slots=True)
class ApiState:
    store: Store
    settings: BrokerSettings
    replica: str
    auth: Authenticator


def api_state(request: Request) -> ApiState:
    state = request.app.state.api
    assert isinstance(state, ApiState)
    return state


def bearer_token(request: Request) -> str:
    """The token from ``Authorization: Bearer`` or OpenStack's ``X-Auth-Token``."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if header:
        raise errors.AuthError("the Authorization header must be 'Bearer <token>'")
    token = request.headers.get("x-auth-token", "").strip()
    if not token:
        raise errors.AuthError("no token")
    return token


def require(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    async def dependency(request: Request) -> Principal:
        principal = await api_state(request).auth.authenticate(bearer_token(request))
        if not principal.has_any(roles):
            have = ", ".join(sorted(principal.roles)) or "no Meridian role"
            raise errors.Forbidden(
                f"{principal.user} has {have}; this request needs one of: {', '.join(roles)}"
            )
        return principal

    return dependency


State = Annotated[ApiState, Depends(api_state)]
SiteReader = Annotated[Principal, Depends(require(*READ_SITES))]
Reader = Annotated[Principal, Depends(require(*READ_ALL))]
Admin = Annotated[Principal, Depends(require(*WRITE))]
