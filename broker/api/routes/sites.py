"""``/v1/sites``: register, list, inspect and delete sites.

Invariant: a site is created exactly once — registration is one etcd transaction that
compares the key's create revision to 0 and writes the spec and its event together, so
two concurrent registrations of one id give one 201 and one 409, and an event never
describes a write that did not land.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from broker import errors
from broker.api import deps, schemas
from broker.api.routes.common import as_json, by_suffix, decode_stored
from broker.models import codec
from broker.models import event as events
from broker.models.inventory import Inventory
from broker.models.site import Geo, Health, SiteHealth, SiteSpec, SiteStatus
from broker.store import keys
from broker.store.protocol import Compare, Delete, Get, Op, Put, Target

router = APIRouter(prefix="/v1/sites", tags=["sites"])


def _check_id(site_id: str) -> str:
    if not schemas.DNS_LABEL.fullmatch(site_id):
        raise errors.InvalidInput("id", f"{site_id!r} is not a lowercase DNS label")
    return site_id


check_id = _check_id  # for the routes below /v1/sites/{id}/ that live in their own module


@router.post("", status_code=201)
async def register(body: schemas.SiteIn, state: deps.State, who: deps.Admin) -> JSONResponse:
    spec = SiteSpec(
        id=body.id,
        region=body.region,
        zone=body.zone,
        failure_domains=dict(body.failure_domains),
        geo=Geo(lat=body.geo.lat, lon=body.geo.lon) if body.geo else None,
        labels=dict(body.labels),
        registered_ms=int(time.time() * 1000),
    )
    event = events.new(
        "site.registered",
        spec.id,
        f"site {spec.id} registered in region {spec.region} by {who.user}",
        replica=state.replica,
    )
    key = keys.site(spec.id)
    result = await state.store.txn(
        [Compare(key, Target.CREATE, Op.EQUAL, 0)],
        [Put(key, codec.encode(spec)), Put(keys.event(event.id), codec.encode(event))],
    )
    if not result.succeeded:
        raise errors.AlreadyExists("site", spec.id)
    return JSONResponse(
        as_json(spec), status_code=201, headers={"Location": f"/v1/sites/{spec.id}"}
    )


@router.get("")
async def list_sites(state: deps.State, who: deps.SiteReader) -> dict[str, Any]:
    specs, revision = await state.store.get_prefix(keys.SITES)
    statuses = by_suffix((await state.store.get_prefix(keys.SITESTATUS))[0], keys.SITESTATUS)
    healths = by_suffix((await state.store.get_prefix(keys.HEALTH))[0], keys.HEALTH)
    rows = []
    for kv in specs:
        spec = decode_stored(SiteSpec, kv)
        if not who.scope.covers(spec.id, spec.region):
            continue  # an operator sees the sites of its scope
        status_kv = statuses.get(spec.id)
        health_kv = healths.get(spec.id)
        status = decode_stored(SiteStatus, status_kv) if status_kv else None
        health = decode_stored(SiteHealth, health_kv) if health_kv else None
        rows.append(
            {
                "id": spec.id,
                "region": spec.region,
                "zone": spec.zone,
                "health": str(health.state if health else Health.UNKNOWN),
                "replica": status.replica if status else None,
                "last_heartbeat_ms": status.last_heartbeat_ms if status else None,
                "protocol": status.protocol if status else None,
            }
        )
    return {"sites": rows, "revision": revision}


@router.get("/{site_id}")
async def show(site_id: str, state: deps.State, who: deps.SiteReader) -> dict[str, Any]:
    _check_id(site_id)
    # one transaction: spec, status, health and inventory as of one revision
    result = await state.store.txn(
        [],
        [
            Get(keys.site(site_id)),
            Get(keys.sitestatus(site_id)),
            Get(keys.health(site_id)),
            Get(keys.inventory(site_id)),
        ],
    )
    spec_kv, status_kv, health_kv, inventory_kv = (r[0] if r else None for r in result.responses)
    if spec_kv is None:
        raise errors.NotFound("site", site_id)
    spec = decode_stored(SiteSpec, spec_kv)
    deps.check_place(who, spec.id, spec.region)
    health = (
        as_json(decode_stored(SiteHealth, health_kv))
        if health_kv
        else {"site": site_id, "state": str(Health.UNKNOWN), "since_ms": 0, "reason": ""}
    )
    return {
        "id": spec.id,
        "spec": as_json(spec),
        "status": as_json(decode_stored(SiteStatus, status_kv)) if status_kv else None,
        "health": health,
        "inventory": (decode_stored(Inventory, inventory_kv).summary() if inventory_kv else None),
        "revision": result.revision,
    }


@router.delete("/{site_id}", status_code=204)
async def delete(site_id: str, state: deps.State, who: deps.Admin) -> Response:
    _check_id(site_id)
    event = events.new(
        "site.deleted", site_id, f"site {site_id} deleted by {who.user}", replica=state.replica
    )
    key = keys.site(site_id)
    result = await state.store.txn(
        [Compare(key, Target.CREATE, Op.GREATER, 0)],
        [Delete(key), Put(keys.event(event.id), codec.encode(event))],
    )
    if not result.succeeded:
        raise errors.NotFound("site", site_id)
    return Response(status_code=204)
