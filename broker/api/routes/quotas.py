"""``/v1/quotas``: tenant limits, usage, and admission-time reservations.

Invariant 7 (no oversubscription): every reservation made here goes through the
replica's one ``quota.ledger.Ledger``, which admits it in one etcd transaction against
the tenant's limits, committed usage and every live reservation. Who may do what is in
``deps`` (the role policy's one table); a reservation or commit naming a site is also
checked against an operator's scope.

The broker's own holds (ids starting ``vnf.``, ``quota.models.BROKER_NAMESPACE``) are
nobody's to create, commit or release here (403), and a reservation made here never has a
negative amount (422): only the broker gives quota back, when what used it is deleted.

Quota errors leave through the API's one problem table (``problems.TABLE``): bad input
422 naming the field, a refusal 409 naming the class, the request and what is left, an
expired reservation 410.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import Field

from broker import errors
from broker.api import deps, schemas
from broker.api.auth import Principal
from broker.api.routes.common import decode_stored
from broker.models.site import SiteSpec
from broker.store import keys
from quota import admission, models
from quota import errors as quota_errors
from quota.layout import TenantView, class_key
from quota.ledger import Ledger

router = APIRouter(tags=["quotas"])


def _tenant(tenant: str, who: Principal) -> models.TenantId:
    """The tenant id, validated; a member may only name its own project."""
    found = models.tenant_id(tenant)
    deps.check_tenant(who, found, "its own quota")
    return found


def _ledger(state: deps.ApiState) -> Ledger:
    return state.quotas.ledger


def _quota_body(tenant: str, view: TenantView) -> dict[str, Any]:
    lines = admission.report(view.limits, view.account, view.holds.values())
    return {
        "tenant": tenant,
        "quota": view.quota.dump(),
        "effective": view.limits.dump(),
        "over_limit": [line.resource for line in lines if line.over_limit],
        "revision": view.revision,
    }


@router.get("/v1/quotas/{tenant}")
async def show(tenant: str, state: deps.State, who: deps.TenantReader) -> Any:
    found = _tenant(tenant, who)
    view = await _ledger(state).view(found)
    return _quota_body(found, view)


@router.put("/v1/quotas/{tenant}")
async def set_limits(
    tenant: str,
    state: deps.State,
    who: deps.Admin,
    body: Annotated[dict[str, Any], Body()],
) -> Any:
    found = _tenant(tenant, who)
    ledger = _ledger(state)
    quota = models.TenantQuota.parse(body)
    await ledger.set_quota(found, quota)
    view = await ledger.view(found)
    return _quota_body(found, view)


async def _reported(state: deps.ApiState, tenant: str) -> dict[str, dict[str, int]]:
    """What each site's agent last reported for ``tenant`` (only the quota classes)."""
    items, _ = await state.store.get_prefix(keys.USAGE)
    out: dict[str, dict[str, int]] = {}
    for kv in items:
        try:
            projects = json.loads(kv.value)
        except ValueError as exc:
            raise errors.BrokerError(f"the value stored at {kv.key!r} is corrupt") from exc
        amounts = projects.get(tenant, {}) if isinstance(projects, dict) else {}
        counts = {c: int(n) for c, n in amounts.items() if c in models.RESOURCE_CLASSES and n}
        if counts:
            out[keys.name_in(keys.USAGE, kv.key)] = counts
    return out


@router.get("/v1/quotas/{tenant}/usage")
async def usage(
    tenant: str, state: deps.State, who: deps.TenantReader
) -> Any:
    found = _tenant(tenant, who)
    view = await _ledger(state).view(found)
    reported = await _reported(state, found)
    sites = admission.per_site(view.account, view.holds.values())
    for site in reported:
        sites.setdefault(site, {"used": {}, "reserved": {}})
    for site, entry in sites.items():
        entry["reported"] = reported.get(site, {})
    lines = admission.report(view.limits, view.account, view.holds.values())
    return {
        "tenant": found,
        "revision": view.revision,
        "global": [
            {
                "resource": line.resource,
                "limit": line.limit,
                "used": line.used,
                "reserved": line.reserved,
                "left": line.left,
                "over_limit": line.over_limit,
            }
            for line in lines
        ],
        "sites": dict(sorted(sites.items())),
    }


class ReservationIn(schemas.Closed):
    """``POST /v1/quotas/{tenant}/reservations``."""

    deltas: dict[str, int] = Field(description="resource class -> amount (> 0)")
    ttl: int = Field(default=60, description="seconds before an uncommitted reservation expires")
    idempotency_key: str | None = Field(default=None, description="retries with it reserve once")
    site: str = Field(default="", description="the site it will be created at, if known")


class CommitIn(schemas.Closed):
    site: str | None = Field(
        default=None, description="where it was created (default: the reserved site)"
    )


async def _region(state: deps.ApiState, site: str, who: Principal) -> str:
    if not site:
        return ""
    kv = await state.store.get(keys.site(site))
    if kv is None:
        raise errors.InvalidInput("site", f"no site {site!r}")
    region = decode_stored(SiteSpec, kv).region
    deps.check_place(who, site, region)
    return region


def _client_owned(rid: str, field: str) -> models.ReservationId:
    """A reservation id a client may use: valid, and not a hold of the broker's own."""
    found = models.reservation_id(rid, field)
    if models.broker_owned(found):
        raise errors.Forbidden(
            f"reservation {found} is held by the broker for a VNF: create or delete the VNF "
            f"instead (ids starting {models.BROKER_NAMESPACE!r} are the broker's)"
        )
    return found


def _reservation(value: models.Reservation) -> dict[str, Any]:
    return {
        "tenant": value.tenant,
        "id": value.id,
        "deltas": dict(value.deltas),
        "site": value.site,
        "expires_ms": value.expires_ms,
        "state": value.state,
        "revision": value.revision,
    }


def _settled(tenant: str, value: models.Settled) -> dict[str, Any]:
    return {"tenant": tenant, "id": value.id, "state": value.state,
            "deltas": dict(value.deltas), "site": value.site}


@router.post("/v1/quotas/{tenant}/reservations", status_code=201)
async def reserve(
    tenant: str, body: ReservationIn, state: deps.State, who: deps.TenantWriter
) -> Any:
    found = _tenant(tenant, who)
    deltas = models.deltas(body.deltas, negative=False)
    if body.idempotency_key is not None:
        _client_owned(body.idempotency_key, "idempotency_key")
    region = await _region(state, body.site, who)
    if body.site:
        models.name(body.site, "site")
    value = await _ledger(state).reserve(
        found, deltas, body.ttl, body.idempotency_key, site=body.site, region=region
    )
    return JSONResponse(_reservation(value), status_code=201)


@router.post("/v1/quotas/{tenant}/reservations/{rid}/commit")
async def commit(
    tenant: str,
    rid: str,
    state: deps.State,
    who: deps.TenantWriter,
    body: Annotated[CommitIn | None, Body()] = None,
) -> Any:
    found = _tenant(tenant, who)
    owned = _client_owned(rid, "id")
    site = body.site if body is not None else None
    region = await _region(state, site or "", who)
    value = await _ledger(state).commit(found, owned, site=site, region=region)
    return _settled(found, value)


@router.delete("/v1/quotas/{tenant}/reservations/{rid}")
async def release(
    tenant: str, rid: str, state: deps.State, who: deps.TenantWriter
) -> Any:
    found = _tenant(tenant, who)
    value = await _ledger(state).release(found, _client_owned(rid, "id"))
    return _settled(found, value)


@router.get("/v1/quota-classes/{name}")
async def show_class(name: str, state: deps.State, _: deps.Reader) -> Any:
    models.name(name, "name")
    kv = await state.store.get(keys.QUOTA + class_key(name))
    stored = json.loads(kv.value).get("limits", {}) if kv is not None else {}
    return {"name": name, "limits": stored, "effective": {**models.DEFAULTS, **stored}}


@router.put("/v1/quota-classes/{name}")
async def set_class(
    name: str,
    state: deps.State,
    _: deps.Admin,
    body: Annotated[dict[str, Any], Body()],
) -> Any:
    models.name(name, "name")
    if set(body) - {"limits"}:
        raise quota_errors.InvalidQuota(sorted(set(body) - {"limits"})[0],
                                        "unknown field; allowed: limits")
    found = models.limits(body.get("limits", {}))
    await _ledger(state).set_class(name, found)
    return {"name": name, "limits": found, "effective": {**models.DEFAULTS, **found}}
