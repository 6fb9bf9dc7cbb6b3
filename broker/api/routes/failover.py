"""The operator's failover controls (issue 10).

``POST /v1/vnfs/{id}/failover``: a switchover of a VNF's active role. ``POST
/v1/vnfs/{id}/heal``: restore redundancy now (a replacement refused or given up is asked
for again). Each request is checked against the VNF's failover machines as they stand (a
VNF that is not followed, has no ready standby — at ``to_site`` when given — or nothing to
heal is refused with the reason, nothing written), then stored under
``failover-asked/<id>`` for the leader's failover controller (a switchover demotes the
active first and promotes the standby once the demotion is reported applied). Role-checked
like the VNF's other writes (its tenant, and the operator's site scope over its sites).

``POST /v1/sites/{id}/drain`` and ``/undrain`` (admin): a planned switchover of
everything off a site for maintenance, stored under ``drains/<site>``; the failover
controller moves the site's VNFs one at a time (``broker.controllers.drain``).

Invariant: the API never writes desired state or the machines; only the fenced
controller does.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from broker import errors
from broker.api import deps
from broker.api.auth import Principal
from broker.api.deps import ApiState
from broker.api.routes.common import decode_stored
from broker.controllers.failover import FOLLOWED
from broker.failover import machine, policy
from broker.models import codec
from broker.models import event as events
from broker.models import vnf as model
from broker.store import keys
from broker.store.protocol import Delete, Put

router = APIRouter(tags=["vnfs"])


class FailoverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to_site: Annotated[str, Field(max_length=64)] = ""
    """Promote the standby at this site (any ready standby when empty)."""


async def _machines(
    state: ApiState, who: Principal, vnf_id: str, what: str
) -> dict[str, machine.Vnf]:
    """The VNF's machines as they stand, after the caller's rights over it are checked."""
    kv = await state.store.get(keys.vnf(vnf_id))
    if kv is None:
        raise errors.NotFound("vnf", vnf_id)
    record = decode_stored(model.VnfRecord, kv)
    deps.check_tenant(who, record.tenant, "its own VNFs")
    await deps.check_sites(state, who, {m.site for m in record.members if m.site})
    if record.deleted or record.state not in FOLLOWED:
        raise machine.Refused(f"a {record.state.value} VNF cannot be {what}")
    stored = await state.store.get(keys.failover(vnf_id))
    desc = model.parse(record.descriptor)
    return policy.load(stored.value) if stored else policy.machines(record, desc, state.settings)


async def _ask(state: ApiState, vnf_id: str, doc: dict[str, Any]) -> None:
    doc = {**doc, "at_ms": int(time.time() * 1000)}
    await state.store.txn([], [Put(keys.failover_asked(vnf_id), json.dumps(doc).encode())])


@router.post("/v1/vnfs/{vnf_id}/failover", status_code=202)
async def failover(
    vnf_id: str, state: deps.State, who: deps.TenantWriter, body: FailoverIn | None = None
) -> JSONResponse:
    asked = body or FailoverIn()
    machines = await _machines(state, who, vnf_id, "failed over")
    switchable = [m for m in machines.values() if m.policy.model in ("active-standby", "n+k")]
    if not switchable:
        raise machine.Refused("no VDU of this VNF has a standby to switch over to")
    for mach in switchable:  # refused here, with the reason, before anything is written
        machine.step(mach, machine.Failover(asked.to_site), int(time.time() * 1000))
    await _ask(state, vnf_id, {"action": "failover", "to_site": asked.to_site})
    return JSONResponse(
        {"id": vnf_id, "asked": "failover", "to_site": asked.to_site}, status_code=202
    )


@router.post("/v1/vnfs/{vnf_id}/heal", status_code=202)
async def heal(vnf_id: str, state: deps.State, who: deps.TenantWriter) -> JSONResponse:
    machines = await _machines(state, who, vnf_id, "healed")
    now, wanting, refusals = int(time.time() * 1000), [], []
    for vdu, mach in machines.items():
        try:
            after = machine.step(mach, machine.Heal(), now).vnf
        except machine.Refused as exc:
            refusals.append(f"{vdu}: {exc.problem}")
            continue
        wanting += [m.name for m in after.members if m.replace_wanted]
    if not wanting:
        raise machine.Refused("; ".join(refusals) or "nothing to heal")
    await _ask(state, vnf_id, {"action": "heal"})
    return JSONResponse(
        {"id": vnf_id, "asked": "heal", "members": sorted(set(wanting))}, status_code=202
    )


async def _site_vnfs(state: ApiState, site_id: str) -> list[str]:
    """The VNFs with a member at the site (what a drain moves)."""
    kvs, _ = await state.store.get_prefix(keys.VNFS)
    out = []
    for kv in kvs:
        rec = decode_stored(model.VnfRecord, kv)
        if not rec.deleted and any(m.site == site_id for m in rec.members):
            out.append(rec.id)
    return sorted(out)


async def _drain(state: ApiState, who: Principal, site_id: str, on: bool) -> Any:
    if await state.store.get(keys.site(site_id)) is None:
        raise errors.NotFound("site", site_id)
    await deps.check_sites(state, who, {site_id})
    key = keys.drain(site_id)
    was = await state.store.get(key) is not None
    verb = "drain" if on else "undrain"
    ev = events.new(
        f"site.{verb}",
        site_id,
        f"site {site_id}: {verb} asked by {who.user}",
        replica=state.replica,
    )
    doc = {"by": who.user, "at_ms": int(time.time() * 1000)}
    ops: list[Put | Delete] = [Put(keys.event(ev.id), codec.encode(ev))]
    ops.append(Put(key, json.dumps(doc).encode()) if on else Delete(key))
    await state.store.txn([], ops)
    vnfs = await _site_vnfs(state, site_id)
    return {"site": site_id, "draining": on, "was_draining": was, "vnfs": vnfs}


@router.post("/v1/sites/{site_id}/drain", status_code=202)
async def drain(site_id: str, state: deps.State, who: deps.Admin) -> Any:
    """Move every VNF member off the site (switch over first), one VNF at a time."""
    return JSONResponse(await _drain(state, who, site_id, True), status_code=202)


@router.post("/v1/sites/{site_id}/undrain", status_code=202)
async def undrain(site_id: str, state: deps.State, who: deps.Admin) -> Any:
    """Stop draining the site (members already moved stay where they are)."""
    return JSONResponse(await _drain(state, who, site_id, False), status_code=202)
