"""``/v1/vnfs`` and ``/v1/latency``: ask for a VNF, follow it, explain it, delete it.

``POST /v1/vnfs`` takes a descriptor (JSON or YAML), validates it against its schema and
against the federation (``placement.admission``), asks the quota ledger whether the
tenant has the headroom (a refusal is the plan's top-level reason, naming the class, the
request and what is left), and plans it on a fresh snapshot: with ``?dry_run=true`` that
plan is the answer and nothing is written; without, an infeasible plan is a 409 problem
carrying every site's reason, and a feasible one stores the VNF as PENDING (one
create-only transaction) for the leader's placement controller to reserve and commit.

Invariant: the API never writes claims or desired objects — only the fenced controller
does — so a replica that serves this route can never double-book a host.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from broker import errors
from broker.api import deps, idempotency, problems
from broker.api.auth import Principal
from broker.api.routes.common import as_json, decode_stored
from broker.models import codec
from broker.models import vnf as model
from broker.placement import admission, feasible
from broker.placement.plan import Planner, PlanResult
from broker.placement.snapshot import Snapshot
from broker.store import keys
from broker.store.protocol import Compare, Op, Put, Target

router = APIRouter(tags=["vnfs"])


def _tenant_check(who: Principal, tenant: str) -> None:
    deps.check_tenant(who, tenant, "its own VNFs")


def _sites_of(record: model.VnfRecord) -> set[str]:
    return {m.site for m in record.members if m.site}


def _scope(who: Principal) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """Where a VNF created by ``who`` may be placed (None: anywhere)."""
    if "admin" in who.roles or who.scope.everywhere:
        return None
    return tuple(sorted(who.scope.regions)), tuple(sorted(who.scope.sites))


async def _short(state: deps.ApiState, desc: model.Descriptor) -> str | None:
    """What the tenant's quota lacks for ``desc`` right now (None: it fits)."""
    return await state.quotas.headroom.check(desc.tenant, model.deltas(desc))


async def _plan(
    state: deps.ApiState,
    snap: Snapshot,
    desc: model.Descriptor,
    vnf_id: str,
    scope: tuple[tuple[str, ...], tuple[str, ...]] | None,
) -> PlanResult:
    """A plan on the replica's live snapshot: the creator's scope, then the tenant's
    quota, last in the checker chain (as the VNF controller plans it)."""
    more = feasible.for_request(scope, await _short(state, desc))
    return Planner().with_checkers(*more).plan(snap, desc, vnf_id)


async def _world(state: deps.ApiState) -> tuple[Snapshot, set[str]]:
    snap = await state.snapshot.current()
    images, _ = await state.store.get_prefix(keys.IMAGES)
    return snap, {keys.split_image_key(kv.key)[0] for kv in images}


@router.post("/v1/vnfs", status_code=202)
async def create(
    request: Request, state: deps.State, who: deps.TenantWriter, dry_run: bool = False
) -> JSONResponse:
    """Validate, check the tenant's headroom, store the VNF PENDING; the leader's VNF
    controller reserves, plans and commits (``?dry_run=true``: only the plan). A scoped
    operator's VNF carries its scope, and placement stays inside it. Under an
    ``Idempotency-Key`` a retry gets the first answer (``broker.api.idempotency``)."""
    raw = await request.body()
    claim = None if dry_run else idempotency.claim_of(request, who, raw)
    if claim is not None and (seen := await idempotency.replay(state.store, claim)) is not None:
        return seen
    # parsed off the loop: YAML is pure Python, and the loop also serves the campaign
    desc = await asyncio.to_thread(model.parse, raw)
    _tenant_check(who, desc.tenant)
    snap, catalog = await _world(state)
    admission.check(desc, snap, catalog)
    vnf_id = f"{desc.name}-{uuid.uuid4().hex[:6]}"
    if dry_run:
        result = await _plan(state, snap, desc, vnf_id, _scope(who))
        return JSONResponse(
            {"dry_run": True, "feasible": result.feasible, "plan": result.explain(snap)}
        )
    short = await _short(state, desc)
    if short is not None:
        return problems.problem(
            409, "quota-exceeded", "Quota exceeded", f"quota: {short}", field="tenant",
            plan={"feasible": False, "reason": f"quota: {short}", "quota": short},
        )
    now = int(time.time() * 1000)
    record = model.VnfRecord(
        vnf_id, desc.tenant, model.to_json(desc), created_ms=now, updated_ms=now,
        scope=_scope(who),
    )
    return await _store_pending(state, record, claim)


async def _store_pending(
    state: deps.ApiState, record: model.VnfRecord, claim: idempotency.Claim | None
) -> JSONResponse:
    """One create-only transaction: the PENDING record, and the request's idempotency
    record beside it when it has a key (a lost race answers from the winner's)."""
    key = keys.vnf(record.id)
    body = {"id": record.id, "state": str(record.state), "tenant": record.tenant}
    headers = {"Location": f"/v1/vnfs/{record.id}"}
    compares = [Compare(key, Target.CREATE, Op.EQUAL, 0)]
    puts = [Put(key, codec.encode(record))]
    held = None
    if claim is not None:
        ttl = state.settings.api.idempotency_ttl_s
        held = await idempotency.writes(state.store, claim, ttl, body, 202, headers)
        compares += held.compares
        puts += held.puts
    txn = await state.store.txn(compares, puts)
    if txn.succeeded:
        return JSONResponse(body, status_code=202, headers=headers)
    if held is not None:
        await state.store.revoke_lease(held.lease)
    if claim is not None and (seen := await idempotency.replay(state.store, claim)) is not None:
        return seen
    raise errors.AlreadyExists("vnf", record.id)


async def _record(state: deps.ApiState, vnf_id: str, who: Principal) -> model.VnfRecord:
    kv = await state.store.get(keys.vnf(vnf_id))
    if kv is None:
        raise errors.NotFound("vnf", vnf_id)
    record = decode_stored(model.VnfRecord, kv)
    _tenant_check(who, record.tenant)
    await deps.check_sites(state, who, _sites_of(record))
    return record


@router.get("/v1/vnfs")
async def list_vnfs(state: deps.State, who: deps.TenantReader) -> dict[str, Any]:
    kvs, revision = await state.store.get_prefix(keys.VNFS)
    records = [decode_stored(model.VnfRecord, kv) for kv in kvs]
    regions = await deps.site_regions(state.store, {s for r in records for s in _sites_of(r)})
    rows = []
    for rec in records:
        seen = who.has_any(deps.FEDERATION_WIDE) or rec.tenant == who.project_id
        if seen and all(
            "admin" in who.roles or who.scope.covers(s, regions[s]) for s in _sites_of(rec)
        ):
            rows.append(
                {
                    "id": rec.id,
                    "tenant": rec.tenant,
                    "state": str(rec.state),
                    "deleted": rec.deleted,
                    "members": len(rec.members),
                    "reason": rec.reason,
                }
            )
    return {"vnfs": rows, "revision": revision}


@router.get("/v1/vnfs/{vnf_id}")
async def show(vnf_id: str, state: deps.State, who: deps.TenantReader) -> dict[str, Any]:
    record = await _record(state, vnf_id, who)
    out = as_json(record)
    out["state"] = str(record.state)
    out.pop("reservation", None)
    out.pop("extra", None)
    return out


@router.get("/v1/vnfs/{vnf_id}/explain")
async def explain(
    vnf_id: str, request: Request, state: deps.State, who: deps.TenantReader
) -> dict[str, Any]:
    record = await _record(state, vnf_id, who)
    kv = await state.store.get(keys.placement(vnf_id))
    if kv is not None:
        doc: dict[str, Any] = json.loads(kv.value)
        return {"id": vnf_id, "state": str(record.state), "live": False, **doc}
    snap = await state.snapshot.current()
    result = await _plan(state, snap, model.parse(record.descriptor), vnf_id, record.scope)
    return {"id": vnf_id, "state": str(record.state), "live": True, "explain": result.explain(snap)}


@router.delete("/v1/vnfs/{vnf_id}", status_code=202)
async def delete(vnf_id: str, state: deps.State, who: deps.TenantWriter) -> JSONResponse:
    key = keys.vnf(vnf_id)
    for _ in range(8):
        kv = await state.store.get(key)
        if kv is None:
            raise errors.NotFound("vnf", vnf_id)
        record = decode_stored(model.VnfRecord, kv)
        _tenant_check(who, record.tenant)
        await deps.check_sites(state, who, _sites_of(record))
        updated = dataclasses.replace(record, deleted=True, updated_ms=int(time.time() * 1000))
        txn = await state.store.txn(
            [Compare(key, Target.MOD, Op.EQUAL, kv.mod_revision)], [Put(key, codec.encode(updated))]
        )
        if txn.succeeded:
            return JSONResponse({"id": vnf_id, "deleted": True}, status_code=202)
    raise errors.Conflict(f"vnf {vnf_id} kept changing; retry", retry_after=0.1)


# -- the latency matrix ------------------------------------------------------------------


class LatencyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    a: Annotated[str, Field(min_length=1, max_length=128)]
    b: Annotated[str, Field(min_length=1, max_length=128)]
    ms: Annotated[float, Field(ge=0)]


class LatencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entries: Annotated[list[LatencyEntry], Field(max_length=200_000)]


@router.put("/v1/latency")
async def put_latency(body: LatencyIn, state: deps.State, _: deps.Admin) -> dict[str, Any]:
    for i, e in enumerate(body.entries):
        if e.a == e.b:
            raise errors.InvalidInput(f"entries[{i}].b", "a location's latency to itself is 0")
        if not math.isfinite(e.ms):
            raise errors.InvalidInput(f"entries[{i}].ms", "must be a finite number")
    value = json.dumps(body.model_dump(), separators=(",", ":")).encode()
    revision = await state.store.put(keys.LATENCY, value)
    return {"entries": len(body.entries), "revision": revision}


@router.get("/v1/latency")
async def get_latency(state: deps.State, _: deps.SiteReader) -> dict[str, Any]:
    kv = await state.store.get(keys.LATENCY)
    entries = json.loads(kv.value)["entries"] if kv is not None else []
    return {"entries": entries, "revision": kv.mod_revision if kv is not None else 0}
