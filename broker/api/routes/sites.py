"""``/v1/sites``: register, list, inspect and delete sites.

Invariant: a site is created exactly once — registration is one etcd transaction that
compares the key's create revision to 0 and writes the spec and its event together, so
two concurrent registrations of one id give one 201 and one 409, and an event never
describes a write that did not land.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from broker import errors
from broker.api import deps, schemas
from broker.api.routes.common import as_json, by_suffix, decode_stored
from broker.models import codec
from broker.models import event as events
from broker.models.inventory import Inventory
from broker.models.site import Geo, Health, SiteHealth, SiteSpec, SiteStatus
from broker.store import keys
from broker.store.protocol import Compare, Delete, Get, KeyValue, Op, Put, Target

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


MAX_LIMIT = 1000
SCAN_MAX = 5000
"""Site specs one listing request examines at most: a filter that matches little ends the
page early (with a cursor to go on) rather than reading every site in one request."""


def _labels(values: list[str]) -> dict[str, str]:
    wanted: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise errors.InvalidInput("label", f"{item!r} is not key=value")
        wanted[key] = value
    return wanted


def _row(spec: SiteSpec, status: SiteStatus | None, health: SiteHealth | None) -> dict[str, Any]:
    return {
        "id": spec.id,
        "region": spec.region,
        "zone": spec.zone,
        "labels": dict(spec.labels),
        "health": str(health.state if health else Health.UNKNOWN),
        "replica": status.replica if status else None,
        "last_heartbeat_ms": status.last_heartbeat_ms if status else None,
        "protocol": status.protocol if status else None,
    }


async def _batch(
    state: deps.ApiState, after: str, limit: int
) -> tuple[list[tuple[SiteSpec, KeyValue | None, KeyValue | None]], int, bool]:
    """Up to ``limit`` specs after ``after`` with their status and health records (read
    over the same id range, not the whole prefix), the revision, and whether more follow."""
    specs, revision, total = await state.store.get_range(keys.SITES, after=after, limit=limit)
    if not specs:
        return [], revision, False
    last = keys.name_in(keys.SITES, specs[-1].key) + "\0"
    status_kvs, _, _ = await state.store.get_range(keys.SITESTATUS, after=after, before=last)
    health_kvs, _, _ = await state.store.get_range(keys.HEALTH, after=after, before=last)
    statuses = by_suffix(status_kvs, keys.SITESTATUS)
    healths = by_suffix(health_kvs, keys.HEALTH)
    out = []
    for kv in specs:
        spec = decode_stored(SiteSpec, kv)
        out.append((spec, statuses.get(spec.id), healths.get(spec.id)))
    return out, revision, total > len(specs)


@router.get("")
async def list_sites(
    state: deps.State,
    who: deps.SiteReader,
    cursor: Annotated[
        str | None, Query(max_length=64, description="the `next` of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = MAX_LIMIT,
    health: Annotated[Health | None, Query(description="UP, DOWN or UNKNOWN")] = None,
    region: Annotated[str | None, Query(max_length=253)] = None,
    label: Annotated[list[str] | None, Query(description="key=value; all must match")] = None,
) -> dict[str, Any]:
    """Sites in id order, a page at a time. The cursor is the last site id examined, so
    a page never repeats or skips a site that existed throughout the listing, however
    many are registered or deleted meanwhile. ``next`` is null after the last page."""
    wanted = _labels(label or [])
    rows: list[dict[str, Any]] = []
    after, examined, revision = cursor or "", 0, 0
    more = True
    while more and len(rows) < limit and examined < SCAN_MAX:
        batch, revision, more = await _batch(state, after, min(limit, SCAN_MAX - examined))
        for spec, status_kv, health_kv in batch:
            examined += 1
            after = spec.id
            if not who.scope.covers(spec.id, spec.region):
                continue  # an operator sees the sites of its scope
            if region is not None and spec.region != region:
                continue
            if any(spec.labels.get(k) != v for k, v in wanted.items()):
                continue
            verdict = decode_stored(SiteHealth, health_kv) if health_kv else None
            if health is not None and (verdict.state if verdict else Health.UNKNOWN) != health:
                continue
            status = decode_stored(SiteStatus, status_kv) if status_kv else None
            rows.append(_row(spec, status, verdict))
            if len(rows) == limit:
                more = more or spec is not batch[-1][0]
                break
    return {"sites": rows, "revision": revision, "next": after if more else None}


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
