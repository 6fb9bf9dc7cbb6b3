"""DR drills over the API: ``POST /v1/drills`` (what-if or live), ``GET /v1/drills``,
``GET /v1/drills/{id}``, ``GET /v1/drills/{id}/report`` (JSON or HTML),
``POST /v1/drills/{id}/abort`` and ``GET /v1/reports/survivability``.

A what-if is computed here on a snapshot loaded for the request (a copy of the federation
as placement sees it) and the followed VNFs' records: the failover decisions a loss would
bring (``broker.drills``), never carried out. A live drill is checked the same way (it is
refused, with the reason, when another drill is unfinished, a site of its scope is not
UP, or the what-if shows a drill VNF losing service) and stored ``PLANNED`` with that
what-if as its estimate; the leader's drill controller (``broker.controllers.drills``)
runs it. An abort is stored under ``drill-asked/<id>`` for that controller (asking twice,
or after the end, changes nothing). A federation-wide report also sets the gauges
``meridian_survivable{scope_kind,scope}`` and ``meridian_survivability_shortfall``
(from the report the leader recomputes on change, ``broker.controllers.survivability``;
computed for the request until it has stored one). Creating or aborting a drill needs
operator or admin; reading needs any role, and a caller that is not federation-wide sees
only its own project's VNFs.

Invariant 14: the API writes ``drills/<id>`` and ``drill-asked/<id>`` and nothing else —
nothing under ``desired/``, no claims, nothing in the quota ledger.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import Gauge
from pydantic import BaseModel, ConfigDict, Field

from broker import errors
from broker.api import deps
from broker.api.auth import Principal, Role
from broker.drills import inputs, live, report, rto, survivability, whatif
from broker.models import codec
from broker.models import vnf as model
from broker.models.site import Health, SiteHealth
from broker.placement.snapshot import Snapshot
from broker.store import keys
from broker.store.protocol import Put

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


class SelectorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: model.Labels = {}
    """VNFs whose descriptor carries every one of these labels."""


class DrillIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["whatif", "live"]
    scope: ScopeIn
    tenants: Names = []
    vnfs: Names = []
    """The drill's VNFs (with ``tenants`` and ``selector``; each empty: any in scope)."""
    selector: SelectorIn = SelectorIn()
    max_duration_s: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    failback: bool = True
    hold_s: Annotated[float, Field(ge=0, le=86_400)] = 0.0
    """Live only: stay failed over at least this long (to test the service meanwhile)."""
    isolate: Literal["none", "site"] = "none"
    """Live only: ``site`` quarantines the scope's sites whole (their agents' streams
    closed and refused) for the drill — for a lab or a drill region: allowed only when
    no VNF outside the drill would lose service."""


async def _placed(state: deps.ApiState, who: Principal) -> list[whatif.Placed]:
    """The followed VNFs the caller may see."""
    if who.has_any(deps.FEDERATION_WIDE):
        return await inputs.placed(state.store)
    return await inputs.placed(state.store, lambda rec: rec.tenant == who.project_id)


@router.post("/v1/drills", status_code=201)
async def create(body: DrillIn, state: deps.State, who: Planner_) -> JSONResponse:
    scope = whatif.Scope.parse(body.scope.model_dump())
    if body.mode == "live" and scope.hosts:
        raise errors.InvalidInput("scope.hosts", "a live drill cuts sites, zones or regions")
    if body.hold_s >= body.max_duration_s:
        raise errors.InvalidInput("hold_s", "must be shorter than max_duration_s")
    select = whatif.Selector.of(body.model_dump())
    snap = await Snapshot.load(state.store)
    placed = await _placed(state, who)
    free = await inputs.quota_free(state.store, placed)
    measured = await state.store.get(keys.RTO_MEASURED)
    rto_ = whatif.Rto.from_settings(
        state.settings, rto.estimates(measured.value if measured else None)
    )
    result = whatif.run(
        snap,
        placed,
        scope,
        state.settings,
        select=select,
        quota_free=free,
        rto=rto_,
        catalog=await inputs.catalog(state.store, state.settings),
    )
    drill_id = f"drill-{uuid.uuid4().hex[:12]}"
    doc: dict[str, Any] = {
        "id": drill_id,
        "mode": body.mode,
        "state": "COMPLETED",
        "scope": body.scope.model_dump(),
        "tenants": body.tenants,
        "vnfs": body.vnfs,
        "selector": body.selector.model_dump(),
        "by": who.user,
        "created_ms": int(time.time() * 1000),
        "snapshot_revision": snap.revision,
        "result": result.to_json(),
    }
    if body.mode == "live":
        await _check_live(state, body, result)
        if body.isolate == "site":
            _check_isolate(whatif.run(snap, placed, scope, state.settings, quota_free=free), result)
        doc |= {"state": "PLANNED", "sites": result.sites}
        doc |= {"max_duration_s": body.max_duration_s, "failback": body.failback}
        doc |= {"hold_s": body.hold_s, "isolate": body.isolate == "site"}
    await state.store.put(keys.drill(drill_id), json.dumps(doc).encode())
    return JSONResponse(doc, status_code=201)


async def _check_live(state: deps.ApiState, body: DrillIn, result: whatif.Result) -> None:
    """Refuse a live drill the controller would refuse, and one the what-if shows
    taking a drill VNF out of service (the controller re-checks when it starts it)."""
    kvs, _ = await state.store.get_prefix(keys.DRILLS)
    for kv in kvs:
        other = json.loads(kv.value)
        if other.get("mode") == "live" and other.get("state") in live.ACTIVE_STATES:
            raise errors.Refused("drill", f"drill {other['id']} is {other['state']}")
    if not result.sites:
        raise errors.InvalidInput("scope", "names no registered site")
    for site in result.sites:
        got = await state.store.get(keys.health(site))
        health = codec.decode(SiteHealth, got.value).state if got else Health.UNKNOWN
        if health is not Health.UP:
            raise errors.Refused("drill", f"site {site} is {health.value}, not UP")
    out = result.vnfs  # the drill's own: the what-if ran with its selector
    if not out:
        raise errors.Refused("drill", "no VNF of the drill has a member in the scope")
    broken = [o.vnf for o in out if o.service != "kept"]
    if broken:
        raise errors.Refused(
            "drill",
            f"the what-if shows {', '.join(broken[:5])} losing service: no standby "
            "outside the scope",
        )


def _check_isolate(whole: whatif.Result, drill: whatif.Result) -> None:
    """Refuse quarantining whole sites when the what-if of losing them (every VNF, the
    drill's or not) shows a VNF outside the drill losing service."""
    mine = {o.vnf for o in drill.vnfs}
    hit = [o.vnf for o in whole.vnfs if o.vnf not in mine and o.service != "kept"]
    if hit:
        raise errors.Refused(
            "isolate",
            f"quarantining {', '.join(whole.sites)} would take {', '.join(hit[:5])} out of "
            "service and it is not in the drill: select it too, or drill without isolate",
        )


def _visible(doc: dict[str, Any], who: Principal) -> dict[str, Any]:
    """The drill as ``who`` may see it: a project sees only its own VNFs' lines."""
    if who.has_any(deps.FEDERATION_WIDE):
        return doc
    mine = who.project_id
    doc["result"]["vnfs"] = [v for v in doc["result"]["vnfs"] if v["tenant"] == mine]
    doc["targets"] = [t for t in doc.get("targets", ()) if t["tenant"] == mine]
    if "report" in doc:
        doc["report"]["vnfs"] = [v for v in doc["report"]["vnfs"] if v["tenant"] == mine]
        names = {v["vnf"] for v in doc["report"]["vnfs"]} | {doc["id"]}
        doc["report"]["timeline"] = [e for e in doc["report"]["timeline"] if e["subject"] in names]
    return doc


async def _drill(state: deps.ApiState, drill_id: str) -> dict[str, Any]:
    kv = await state.store.get(keys.drill(drill_id))
    if kv is None:
        raise errors.NotFound("drill", drill_id)
    doc: dict[str, Any] = json.loads(kv.value)
    return doc


@router.get("/v1/drills")
async def listing(state: deps.State, who: deps.SiteReader) -> dict[str, Any]:
    """Every drill, newest first, with its RTO p99 (live drills with a report)."""
    kvs, _ = await state.store.get_prefix(keys.DRILLS)
    rows = []
    for kv in kvs:
        doc = json.loads(kv.value)
        totals = doc.get("report", {}).get("totals", {})
        rows.append(
            {
                "id": doc["id"],
                "mode": doc["mode"],
                "state": doc["state"],
                "reason": doc.get("reason", ""),
                "scope": doc["scope"],
                "sites": doc.get("sites", doc["result"].get("lost_sites", [])),
                "created_ms": doc["created_ms"],
                "vnfs": totals.get("vnfs", len(doc["result"]["vnfs"])),
                "rto_p99_s": totals.get("rto_p99_s"),
            }
        )
    rows.sort(key=lambda r: (-r["created_ms"], r["id"]))
    return {"drills": rows}


@router.get("/v1/drills/{drill_id}")
async def show(drill_id: str, state: deps.State, who: deps.SiteReader) -> dict[str, Any]:
    return _visible(await _drill(state, drill_id), who)


@router.get("/v1/drills/{drill_id}/report", response_model=None)
async def drill_report(
    drill_id: str,
    state: deps.State,
    who: deps.SiteReader,
    format: Literal["json", "html"] = "json",
) -> dict[str, Any] | HTMLResponse:
    """A live drill's measured report (written by the controller when it measured and
    when it ended)."""
    doc = _visible(await _drill(state, drill_id), who)
    if doc["mode"] != "live":
        raise errors.InvalidInput("drill", "a what-if has no measured report; see its result")
    if "report" not in doc:
        raise errors.Refused("report", f"drill {drill_id} is {doc['state']}: nothing measured yet")
    rep: dict[str, Any] = doc["report"]
    if format == "html":
        return HTMLResponse(report.html(rep))
    return rep


@router.post("/v1/drills/{drill_id}/abort", status_code=202)
async def abort(drill_id: str, state: deps.State, who: Planner_) -> JSONResponse:
    """Ask the leader to abort a live drill (fails back when the drill asked for it).
    Idempotent: a second ask, or one after the end, changes nothing."""
    doc = await _drill(state, drill_id)
    if doc["mode"] != "live":
        raise errors.InvalidInput("drill", "a what-if has nothing to abort")
    if doc["state"] in live.ACTIVE_STATES:
        asked = {"by": who.user, "at_ms": int(time.time() * 1000)}
        await state.store.txn([], [Put(keys.drill_asked(drill_id), json.dumps(asked).encode())])
    return JSONResponse({"id": drill_id, "state": doc["state"], "asked": "abort"}, 202)


@router.get("/v1/reports/survivability")
async def survivability_report(
    request: Request, state: deps.State, who: deps.SiteReader
) -> dict[str, Any]:
    """The leader's last report (recomputed on change) for a federation-wide caller;
    computed for the request when none is stored yet, or for a project's own VNFs."""
    wide = who.has_any(deps.FEDERATION_WIDE)
    kv = await state.store.get(keys.SURVIVABILITY) if wide else None
    out: dict[str, Any]
    if kv is not None:
        out = survivability.unpack(json.loads(kv.value))
    else:
        snap = await Snapshot.load(state.store)
        placed = await _placed(state, who)
        free = await inputs.quota_free(state.store, placed)
        out = survivability.report(snap, placed, state.settings, quota_free=free)
        out["snapshot_revision"] = snap.revision
    if wide:  # a project's partial view never sets them
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
