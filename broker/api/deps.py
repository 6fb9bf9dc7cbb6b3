"""What every route needs: the replica's state, and the caller with the right role.

The role sets live here and nowhere else; what a caller *has* is ``policy``'s business:

=============================================  ===========================================
request                                        roles
=============================================  ===========================================
GET sites, latency                             admin, operator, member, reader
GET vnfs, quotas/{t}, quotas/{t}/usage         admin, operator; member, reader of t
POST/DELETE vnfs, quotas/{t}/reservations...   admin, operator; member of t
GET events, leader, revocations, images,       admin, operator
quota-classes
POST/DELETE sites, POST revocations, images,   admin
PUT quotas, quota-classes, latency
/healthz, /metrics, /openapi.json              none (probes, scrapers, the API's schema)
=============================================  ===========================================

An operator acts only at the sites its scope covers (``check_sites``): it neither sees
a site outside it nor reserves, creates, explains or deletes anything placed there.

Invariant: a route that declares one of the dependencies below never runs for a caller
without a validated token (401) or without one of its roles (403). The token itself was
already validated by ``guard.Guard`` before the body was read; the principal it found
rides in the request scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from broker import errors
from broker.api import guard
from broker.api.auth import Authenticator, Principal, Role
from broker.models import codec
from broker.models.site import SiteSpec
from broker.placement.snapshot import Live
from broker.quotas import Quotas
from broker.settings import BrokerSettings
from broker.store import keys
from broker.store.protocol import Store

READ_SITES: tuple[Role, ...] = ("admin", "operator", "member", "reader")
READ_TENANT: tuple[Role, ...] = ("admin", "operator", "member", "reader")
WRITE_TENANT: tuple[Role, ...] = ("admin", "operator", "member")
READ_ALL: tuple[Role, ...] = ("admin", "operator")
WRITE: tuple[Role, ...] = ("admin",)
FEDERATION_WIDE: tuple[Role, ...] = ("admin", "operator")
"""Roles that reach every tenant (an operator still only within its scope)."""


@dataclass(frozen=True, slots=True)
class ApiState:
    store: Store
    settings: BrokerSettings
    replica: str
    auth: Authenticator
    quotas: Quotas
    """The replica's quota seam (one ledger; built once by ``running.py``)."""
    snapshot: Live
    """The replica's placement snapshot, kept current from a watch (``running.py``)."""


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


def check_tenant(who: Principal, tenant: str, what: str = "its resources") -> None:
    """A member or reader may only touch its own project; admins and operators any."""
    if who.has_any(FEDERATION_WIDE) or who.project_id == tenant:
        return
    raise errors.Forbidden(
        f"{who.user} is in project {who.project_id}, not {tenant}: a tenant sees only {what}"
    )


async def site_regions(store: Store, sites: Iterable[str]) -> dict[str, str]:
    """Each named site's region ("" for a site that is not registered)."""
    out: dict[str, str] = {}
    for site in set(sites):
        kv = await store.get(keys.site(site))
        out[site] = codec.decode(SiteSpec, kv.value).region if kv is not None else ""
    return out


def check_place(who: Principal, site: str, region: str) -> None:
    if "admin" in who.roles or who.scope.covers(site, region):
        return
    raise errors.Forbidden(
        f"{who.user} operates {who.scope.describe()}, not site {site} (region {region or '?'})"
    )


async def check_sites(state: ApiState, who: Principal, sites: Iterable[str]) -> None:
    """Refuse (403) unless ``who`` may act at every one of ``sites``."""
    if "admin" in who.roles or who.scope.everywhere:
        return
    for site, region in sorted((await site_regions(state.store, sites)).items()):
        check_place(who, site, region)


State = Annotated[ApiState, Depends(api_state)]
SiteReader = Annotated[Principal, Depends(require(*READ_SITES))]
TenantReader = Annotated[Principal, Depends(require(*READ_TENANT))]
TenantWriter = Annotated[Principal, Depends(require(*WRITE_TENANT))]
Reader = Annotated[Principal, Depends(require(*READ_ALL))]
Admin = Annotated[Principal, Depends(require(*WRITE))]
