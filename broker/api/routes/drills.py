"""DR drills over the API: ``POST /v1/drills`` (what-if), ``GET /v1/drills/{id}`` and
``GET /v1/reports/survivability``.

Both are computed on a snapshot loaded for the request (a copy of the federation as
placement sees it) and the followed VNFs' records: the failover decisions a loss would
bring (``broker.drills``), never carried out. A federation-wide report also sets the
gauges ``meridian_survivable{scope_kind,scope}`` and ``meridian_survivability_shortfall``
(recomputed when the report is asked for; the leader does not recompute it on change
yet). Creating a what-if needs operator or admin; reading needs any role, and a caller
that is not federation-wide sees only its own project's VNFs. Live drills (``mode:
live``) are not built yet and are refused.

Invariant 14: a what-if writes ``drills/<id>`` and nothing else — nothing under
``desired/``, no claims, nothing in the quota ledger.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from prometheus_client import Gauge
from pydantic import BaseModel, ConfigDict, Field

from broker import errors
from broker.api import deps
from broker.api.auth import Principal, Role
from broker.api.routes.common import decode_stored
from broker.controllers.failover import FOLLOWED
from broker.drills import survivability, whatif
from broker.models import vnf as model
from broker.placement.snapshot import Snapshot
from broker.store import keys

router = APIRouter(tags=["drills"])

PLAN_DRILLS: tuple[Role, ...] = ("admin", "operator")
Planner_ = Annotated[Principal, Depends(deps.require(*PLAN_DRILLS))]
Names = Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(max_length=1000)]


class ScopeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sites: Names = []
    zones: Names = []
    regions: Names = []
    hosts: Names = []


class DrillIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["whatif", "live"]
    scope: ScopeIn
    tenants: Names = []


async def _placed(state: deps.ApiState, who: Principal) -> list[whatif.Placed]:
    """The followed VNFs the caller may see, with their parsed descriptors."""
    kvs, _ = await state.store.get_prefix(keys.VNFS)
    out = []
    for kv in kvs:
        rec = decode_stored(model.VnfRecord, kv)
        if rec.deleted or rec.state not in FOLLOWED:
            continue
        if who.has_any(deps.FEDERATION_WIDE) or rec.tenant == who.project_id:
            out.append(whatif.Placed(rec, model.parse(rec.descriptor)))
    return out


@router.post("/v1/drills", status_code=201)
async def create(body: DrillIn, state: deps.State, who: Planner_) -> JSONResponse:
    if body.mode != "whatif":
        raise errors.InvalidInput("mode", "live drills are not built yet; use mode whatif")
    scope = whatif.Scope.parse(body.scope.model_dump())
    snap = await Snapshot.load(state.store)
    result = whatif.run(
        snap, await _placed(state, who), scope, state.settings, tenants=body.tenants
    )
    drill_id = f"drill-{uuid.uuid4().hex[:12]}"
    doc: dict[str, Any] = {
        "id": drill_id,
        "mode": "whatif",
        "state": "COMPLETED",
        "scope": body.scope.model_dump(),
        "tenants": body.tenants,
        "by": who.user,
        "created_ms": int(time.time() * 1000),
        "snapshot_revision": snap.revision,
        "result": result.to_json(),
    }
    await state.store.put(keys.drill(drill_id), json.dumps(doc).encode())
    return JSONResponse(doc, status_code=201)


@router.get("/v1/drills/{drill_id}")
async def show(drill_id: str, state: deps.State, who: deps.SiteReader) -> dict[str, Any]:
    kv = await state.store.get(keys.drill(drill_id))
    if kv is None:
        raise errors.NotFound("drill", drill_id)
    doc: dict[str, Any] = json.loads(kv.value)
    if not who.has_any(deps.FEDERATION_WIDE):
        vnfs = doc["result"]["vnfs"]
        doc["result"]["vnfs"] = [v for v in vnfs if v["tenant"] == who.project_id]
    return doc


@router.get("/v1/reports/survivability")
async def report(request: Request, state: deps.State, who: deps.SiteReader) -> dict[str, Any]:
    snap = await Snapshot.load(state.store)
    out = survivability.report(snap, await _placed(state, who), state.settings)
    out["snapshot_revision"] = snap.revision
    if who.has_any(deps.FEDERATION_WIDE):  # a project's partial view never sets them
        _export(request, out)
    return out


def _export(request: Request, out: dict[str, Any]) -> None:
    """The last federation-wide report as gauges on the replica's registry (labels: the
    registered sites, zones and regions, and the resource classes)."""
    app_state = request.app.state
    gauges: tuple[Gauge, Gauge] | None = getattr(app_state, "survivability_gauges", None)
    if gauges is None:
        registry = app_state.metrics_registry
        gauges = app_state.survivability_gauges = (
            Gauge(
                "meridian_survivable",
                "1 when the loss of the scope is absorbed (last survivability report)",
                ["scope_kind", "scope"],
                registry=registry,
            ),
            Gauge(
                "meridian_survivability_shortfall",
                "Headroom still needed per resource class for the scope's loss",
                ["scope_kind", "scope", "resource_class"],
                registry=registry,
            ),
        )
    survivable, shortfall = gauges
    survivable.clear()
    shortfall.clear()
    for row in out["scopes"]:
        survivable.labels(row["scope_kind"], row["scope"]).set(1 if row["survivable"] else 0)
        for cls_, n in row["shortfall"].items():
            shortfall.labels(row["scope_kind"], row["scope"], cls_).set(n)
