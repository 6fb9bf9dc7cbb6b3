"""``/v1/pki/revocations``: revoke agent certificates by serial, and list revocations.

Invariant: a revocation is one transaction that writes ``pki/revoked/<serial hex>`` only
if absent, together with its event. Every gateway replica watches that prefix and closes
the certificate's streams at once (invariant 5); the first revocation's record is kept.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from broker import errors
from broker.api import deps, schemas
from broker.models import codec
from broker.models import event as events
from broker.store import keys
from broker.store.protocol import Compare, Op, Put, Target

router = APIRouter(prefix="/v1/pki/revocations", tags=["pki"])


@router.post("", status_code=201)
async def revoke(body: schemas.RevocationIn, state: deps.State, who: deps.Admin) -> JSONResponse:
    serial = int(body.serial, 16)
    record = {
        "serial": f"{serial:x}",
        "reason": body.reason,
        "at_ms": int(time.time() * 1000),
        "by": who.user,
    }
    event = events.new(
        "pki.revoked",
        f"{serial:x}",
        f"certificate {serial:x} revoked by {who.user}"
        + (f": {body.reason}" if body.reason else ""),
        replica=state.replica,
    )
    key = keys.revoked(serial)
    result = await state.store.txn(
        [Compare(key, Target.CREATE, Op.EQUAL, 0)],
        [
            Put(key, json.dumps(record, sort_keys=True).encode()),
            Put(keys.event(event.id), codec.encode(event)),
        ],
    )
    if not result.succeeded:
        raise errors.AlreadyExists("revocation of certificate", f"{serial:x}")
    return JSONResponse(record, status_code=201)


@router.get("")
async def list_revocations(state: deps.State, _: deps.Reader) -> dict[str, Any]:
    items, revision = await state.store.get_prefix(keys.REVOKED)
    out = []
    for kv in items:
        serial = keys.name_in(keys.REVOKED, kv.key)
        try:
            record = json.loads(kv.value)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            # written by hand or by an older broker: the key alone still revokes
            record = {"serial": serial, "reason": "", "at_ms": 0, "by": ""}
        out.append(record)
    out.sort(key=lambda r: int(str(r.get("serial", "0")), 16))
    return {"revocations": out, "revision": revision}
