"""``Idempotency-Key`` for create requests (``POST /v1/vnfs``): a retry is not a second VNF.

A client that did not see the answer to a create (timeout, reset) sends it again with the
same ``Idempotency-Key`` header. The first request that creates something stores, in the
same etcd transaction as what it created, a record under ``idempotency/<digest>``: the
digest names the caller (project and user) and the key, the record holds the fingerprint
(sha256) of the request body and the answer given. A later request under that key gets
the same answer (same id, same status) when its body is the same, and a 409 problem when
it is not. The record is attached to an etcd lease of ``api.idempotency_ttl_s`` seconds,
so keys expire by themselves.

Invariant: a key's record exists only beside the object it names — both are written by
one transaction that also requires the key to be absent — so two concurrent requests
under one key create one object, and the loser answers from the winner's record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from broker import errors
from broker.api import problems
from broker.api.auth import Principal
from broker.store import keys
from broker.store.protocol import Compare, Op, Put, Store, Target

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Claim:
    """One request's hold on its key: where its record lives and its body's fingerprint."""

    key: str
    fingerprint: str


def claim_of(request: Request, who: Principal, body: bytes) -> Claim | None:
    """The request's claim (None without the header); a malformed key is refused."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    if not 1 <= len(raw) <= MAX_KEY_LENGTH or not all("!" <= c <= "~" for c in raw):
        raise errors.InvalidInput(
            HEADER, f"must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (a UUID will do)"
        )
    scope = "\0".join((who.project_id, who.user, raw)).encode()
    return Claim(
        keys.idempotency(hashlib.sha256(scope).hexdigest()), hashlib.sha256(body).hexdigest()
    )


def _answer(doc: dict[str, Any]) -> JSONResponse:
    return JSONResponse(doc["body"], status_code=doc["status"], headers=doc["headers"])


def _mismatch() -> JSONResponse:
    return problems.problem(
        409,
        "idempotency-key-reused",
        "Idempotency-Key reused",
        f"this {HEADER} was already used with a different request body; "
        "send a new key for a new request, or the same body to retry",
        field=HEADER,
    )


async def replay(store: Store, claim: Claim) -> JSONResponse | None:
    """The answer already given under ``claim``'s key (or its 409), None if it is unused."""
    kv = await store.get(claim.key)
    if kv is None:
        return None
    doc: dict[str, Any] = json.loads(kv.value)
    if doc["fingerprint"] != claim.fingerprint:
        return _mismatch()
    return _answer(doc)


@dataclass(frozen=True, slots=True)
class Writes:
    """What to add to the creating transaction, and the lease it holds."""

    compares: list[Compare]
    puts: list[Put]
    lease: int


async def writes(
    store: Store, claim: Claim, ttl: int, body: dict[str, Any], status: int, headers: dict[str, str]
) -> Writes:
    """The key's record (under a fresh lease of ``ttl`` seconds) and its absence check."""
    lease = await store.grant_lease(ttl)
    doc = {"fingerprint": claim.fingerprint, "status": status, "body": body, "headers": headers}
    value = json.dumps(doc, separators=(",", ":")).encode()
    absent = Compare(claim.key, Target.CREATE, Op.EQUAL, 0)
    return Writes([absent], [Put(claim.key, value, lease.id)], lease.id)
