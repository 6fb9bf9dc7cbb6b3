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
without a validated token (401) or without one of its roles (403). The token itself was
already validated by ``guard.Guard`` before the body was read; the principal it found
rides in the request scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from broker import errors
from broker.api import guard
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


def require(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    async def dependency(request: Request) -> Principal:
        principal = guard.principal_in(request.scope)
        if principal is None:  # an app without the guard (never the served one)
            token = guard.token_of(request.headers)
            principal = await api_state(request).auth.authenticate(token)
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
