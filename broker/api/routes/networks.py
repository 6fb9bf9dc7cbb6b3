"""``/v1/networks``: stitched networks — create, list, show, delete, verify.

``POST`` checks what it can see at once (name, type, sites registered and within the
caller's scope, each member's gateway endpoint, the MTU against the tunnel overhead) and
stores the request as PENDING; the leader's stitching controller allocates (fenced) and
this route waits for its decision: 201 with the allocation, or the refusal as a problem
(409 overlap/exhaustion saying what is left, 422 for input) with the request removed, so
nothing is half-created. ``DELETE`` of a network a VNF's stitched virtual link uses is a
409 naming the VNFs (the network goes with them). ``verify`` asks every member's agent to
probe its peers and returns the per-pair results (reachability, RTT, loss). The API never
allocates and never writes desired objects: only the fenced controller does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import time
import uuid
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from broker import errors
from broker.api import deps, problems
from broker.api.auth import Principal
from broker.api.routes.common import decode_stored
from broker.controllers import stitching as ctl
from broker.controllers import vnflinks
from broker.models import objects
from broker.models.network import NetworkRecord, NetworkState
from broker.stitching import layout
from broker.store import keys
from broker.store.protocol import Compare, Delete, Get, Op, Put, Target

router = APIRouter(tags=["networks"])
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
POLL_S = 0.05


class NetworkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63)
    tenant: str = Field(min_length=1, max_length=64)
    type: str
    cidr: str = ""
    sites: list[str] = Field(min_length=1, max_length=256)
    mtu: int | None = Field(default=None, ge=1, le=65_535)


def _check_input(body: NetworkIn) -> None:
    if not NAME.fullmatch(body.name):
        raise errors.InvalidInput("name", "lower-case letters, digits and '-', at most 63")
    if body.type not in layout.KINDS:
        raise errors.InvalidInput("type", f"{body.type!r} is not one of {', '.join(layout.KINDS)}")
    if len(set(body.sites)) != len(body.sites):
        raise errors.InvalidInput("sites", "a site is named twice")
    if body.cidr and not body.cidr.startswith("/"):
        try:
            ipaddress.IPv4Network(body.cidr, strict=True)
        except ValueError as exc:
            raise errors.InvalidInput("cidr", f"{body.cidr!r}: {exc}") from None


async def _check_sites(state: deps.ApiState, body: NetworkIn) -> None:
    """Every site registered and with a gateway endpoint; the MTU fits their tunnels."""
    known = await state.store.txn([], [Get(keys.site(s)) for s in body.sites])
    unknown = [s for s, found in zip(body.sites, known.responses, strict=True) if not found]
    if unknown:
        raise errors.InvalidInput("sites", f"not registered: {', '.join(unknown)}")
    result = await state.store.txn(
        [], [Get(keys.observed(s, ctl.ENDPOINT, ctl.ENDPOINT_NAME)) for s in body.sites]
    )
    mtus = []
    for site, found in zip(body.sites, result.responses, strict=True):
        status = objects.Status.decode(found[0].value) if found else None
        ep = ctl.endpoint_of(status)
        if ep is None:
            said = f" (its agent says: {status.message})" if status and status.message else ""
            raise errors.InvalidInput("sites", f"site {site} has no gateway endpoint{said}")
        mtus.append(ep.mtu)
    layout.inner_mtu(mtus, body.mtu)


@router.post("/v1/networks", status_code=201)
async def create(
    body: NetworkIn, state: deps.State, who: deps.TenantWriter, wait: float = 15.0
) -> JSONResponse:
    _check_input(body)
    deps.check_tenant(who, body.tenant, "its own networks")
    await deps.check_sites(state, who, body.sites)
    await _check_sites(state, body)
    now = int(time.time() * 1000)
    rec = NetworkRecord(
        body.name,
        body.tenant,
        body.type,
        tuple(body.sites),
        body.cidr,
        body.mtu or 0,
        created_ms=now,
        updated_ms=now,
    )
    key = keys.network(rec.id)
    txn = await state.store.txn(
        [Compare(key, Target.CREATE, Op.EQUAL, 0)], [Put(key, rec.encode())]
    )
    if not txn.succeeded:
        raise errors.AlreadyExists("network", rec.id)
    decided = await _until(state, rec.id, lambda r: r.state is not NetworkState.PENDING, wait)
    if decided is None:
        return JSONResponse(
            _view(rec), status_code=202, headers={"Location": f"/v1/networks/{rec.id}"}
        )
    got, kv_rev = decided
    if got.state is NetworkState.FAILED:
        # the refusal is the answer; the request goes, so nothing is left half-created
        await state.store.txn([Compare(key, Target.MOD, Op.EQUAL, kv_rev)], [Delete(key)])
        slug = "allocation-refused" if got.status == 409 else "invalid-input"
        title = "Allocation refused" if got.status == 409 else "Invalid input"
        return problems.problem(got.status or 409, slug, title, got.reason)
    return JSONResponse(_view(got), status_code=201, headers={"Location": f"/v1/networks/{rec.id}"})


async def _until(
    state: deps.ApiState, net: str, done: Any, wait: float
) -> tuple[NetworkRecord, int] | None:
    """The record (and its mod revision) once ``done(record)``; None after ``wait`` s."""
    deadline = time.monotonic() + max(0.0, min(wait, 60.0))
    while True:
        kv = await state.store.get(keys.network(net))
        if kv is None:
            raise errors.NotFound("network", net)
        rec = decode_stored(NetworkRecord, kv)
        if done(rec):
            return rec, kv.mod_revision
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(POLL_S)


def _view(rec: NetworkRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "name": rec.id,
        "tenant": rec.tenant,
        "type": rec.type,
        "sites": list(rec.sites),
        "state": str(rec.state),
        "reason": rec.reason,
        "cidr": rec.allocation.get("cidr", rec.cidr),
        "vni": rec.allocation.get("vni"),
        "route_target": rec.allocation.get("rt"),
        "route_distinguisher": rec.allocation.get("rd"),
        "mtu": rec.effective_mtu or rec.mtu or None,
        "segments": list(rec.segments),
        "vnfs": list(rec.vnfs),
        "ports": {site: list(ports) for site, ports in rec.ports.items()},
        "deleted": rec.deleted,
    }


async def _record(state: deps.ApiState, net: str, who: Principal) -> tuple[NetworkRecord, int]:
    kv = await state.store.get(keys.network(net))
    if kv is None:
        raise errors.NotFound("network", net)
    rec = decode_stored(NetworkRecord, kv)
    deps.check_tenant(who, rec.tenant, "its own networks")
    await deps.check_sites(state, who, rec.sites)
    return rec, kv.mod_revision


@router.get("/v1/networks")
async def list_networks(state: deps.State, who: deps.TenantReader) -> dict[str, Any]:
    kvs, revision = await state.store.get_prefix(keys.NETWORKS)
    rows = []
    for kv in kvs:
        rec = decode_stored(NetworkRecord, kv)
        if who.has_any(deps.FEDERATION_WIDE) or rec.tenant == who.project_id:
            rows.append(_view(rec))
    return {"networks": rows, "revision": revision}


@router.get("/v1/networks/{net}")
async def show(net: str, state: deps.State, who: deps.TenantReader) -> dict[str, Any]:
    rec, _ = await _record(state, net, who)
    out = _view(rec)
    result = await state.store.txn(
        [], [Get(keys.observed(s, ctl.STITCH, rec.id)) for s in rec.sites]
    )
    out["site_status"] = {
        s: (objects.Status.decode(r[0].value).settled_state().value if r else "PENDING")
        for s, r in zip(rec.sites, result.responses, strict=True)
    }
    return out


@router.delete("/v1/networks/{net}", status_code=202)
async def delete(net: str, state: deps.State, who: deps.TenantWriter) -> JSONResponse:
    for _ in range(8):
        rec, rev = await _record(state, net, who)
        if rec.deleted:
            break
        users = await vnflinks.users(state.store, rec)
        if users:
            return problems.problem(
                409,
                "network-in-use",
                "Network in use",
                f"network {net} is used by VNF {', '.join(users)}: delete "
                f"{'it' if len(users) == 1 else 'them'} first (the network goes with its VNF)",
                vnfs=users,
            )
        marked = NetworkRecord(**{**_fields(rec), "deleted": True})
        key = keys.network(net)
        txn = await state.store.txn(
            [Compare(key, Target.MOD, Op.EQUAL, rev)], [Put(key, marked.encode())]
        )
        if txn.succeeded:
            break
    return JSONResponse({"id": net, "deleted": True}, status_code=202)


def _fields(rec: NetworkRecord) -> dict[str, Any]:
    return {f: getattr(rec, f) for f in rec.__dataclass_fields__}


@router.post("/v1/networks/{net}/verify")
async def verify(
    net: str, state: deps.State, who: deps.TenantReader, wait: float = 30.0
) -> dict[str, Any]:
    """Every member probes every peer across the network; per-pair results."""
    rec, rev = await _record(state, net, who)
    if rec.state not in (NetworkState.READY, NetworkState.PROVISIONING, NetworkState.DEGRADED):
        raise errors.InvalidInput("network", f"{net} is {rec.state}: nothing to verify")
    nonce = uuid.uuid4().hex[:12]
    key = keys.network(net)
    asked = NetworkRecord(**{**_fields(rec), "verify_nonce": nonce})
    txn = await state.store.txn(
        [Compare(key, Target.MOD, Op.EQUAL, rev)], [Put(key, asked.encode())]
    )
    if not txn.succeeded:
        raise errors.Conflict(f"network {net} changed meanwhile", retry_after=0.0)
    started = time.monotonic()
    answers = await _answers(state, rec, nonce, wait)
    pairs = [p for found in answers.values() for p in found]
    missing = sorted(set(rec.sites) - set(answers))
    return {
        "network": net,
        "ok": not missing and all(p.get("ok") for p in pairs),
        "pairs": pairs,
        "missing": missing,
        "seconds": round(time.monotonic() - started, 3),
    }


async def _answers(
    state: deps.ApiState, rec: NetworkRecord, nonce: str, wait: float
) -> dict[str, list[dict[str, Any]]]:
    deadline = time.monotonic() + max(0.0, min(wait, 120.0))
    got: dict[str, list[dict[str, Any]]] = {}
    while True:
        result = await state.store.txn(
            [], [Get(keys.observed(s, ctl.VERIFY, rec.id)) for s in rec.sites]
        )
        for site, found in zip(rec.sites, result.responses, strict=True):
            if not found:
                continue
            status = objects.Status.decode(found[0].value)
            if status.outputs.get("nonce") == nonce:
                got[site] = list(json.loads(status.outputs.get("results", "[]")))
        if len(got) == len(rec.sites) or time.monotonic() >= deadline:
            return got
        await asyncio.sleep(POLL_S * 2)
