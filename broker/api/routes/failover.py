"""``POST /v1/vnfs/{id}/failover``: an operator's switchover of a VNF's active role.

The request is checked against the VNF's failover machines as they stand (a VNF that is
not followed, or has no ready standby — at ``to_site`` when given — is refused with the
reason, nothing written), then stored under ``failover-asked/<id>`` for the leader's
failover controller, which demotes the active first and promotes the standby once the
demotion is reported applied. Role-checked like the VNF's other writes (its tenant, and
the operator's site scope over the VNF's sites).

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
from broker.api.routes.common import decode_stored
from broker.controllers.failover import FOLLOWED
from broker.failover import machine, policy
from broker.models import vnf as model
from broker.store import keys
from broker.store.protocol import Put

router = APIRouter(tags=["vnfs"])


class FailoverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to_site: Annotated[str, Field(max_length=64)] = ""
    """Promote the standby at this site (any ready standby when empty)."""


@router.post("/v1/vnfs/{vnf_id}/failover", status_code=202)
async def failover(
    vnf_id: str, state: deps.State, who: deps.TenantWriter, body: FailoverIn | None = None
) -> JSONResponse:
    asked = body or FailoverIn()
    kv = await state.store.get(keys.vnf(vnf_id))
    if kv is None:
        raise errors.NotFound("vnf", vnf_id)
    record = decode_stored(model.VnfRecord, kv)
    deps.check_tenant(who, record.tenant, "its own VNFs")
    await deps.check_sites(state, who, {m.site for m in record.members if m.site})
    if record.deleted or record.state not in FOLLOWED:
        raise machine.Refused(f"a {record.state.value} VNF cannot be failed over")
    stored = await state.store.get(keys.failover(vnf_id))
    desc = model.parse(record.descriptor)
    machines = (
        policy.load(stored.value) if stored else policy.machines(record, desc, state.settings)
    )
    switchable = [m for m in machines.values() if m.policy.model in ("active-standby", "n+k")]
    if not switchable:
        raise machine.Refused("no VDU of this VNF has a standby to switch over to")
    for mach in switchable:  # refused here, with the reason, before anything is written
        machine.step(mach, machine.Failover(asked.to_site), int(time.time() * 1000))
    doc: dict[str, Any] = {"to_site": asked.to_site, "at_ms": int(time.time() * 1000)}
    await state.store.txn([], [Put(keys.failover_asked(vnf_id), json.dumps(doc).encode())])
    return JSONResponse(
        {"id": vnf_id, "asked": "failover", "to_site": asked.to_site}, status_code=202
    )
