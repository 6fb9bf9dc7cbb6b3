"""The one table from broker errors to HTTP, rendered as RFC 9457 problem+json.

Every error response of the API goes through here, so a client sees one shape
(``type``, ``title``, ``status``, ``detail``, and ``field`` when one input is to blame)
whatever failed: a domain error, a request that did not validate, or a bug. Temporary
errors carry ``Retry-After``; nothing internal (tracebacks, keys) reaches the body.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from broker import errors
from quota import errors as quota_errors

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:meridian:problem:"


@dataclass(frozen=True, slots=True)
class ProblemKind:
    status: int
    slug: str
    title: str


# Looked up along the exception's MRO, so the most specific class wins
# (Forbidden before AuthError, StoreUnavailable before Temporary).
TABLE: dict[type[BaseException], ProblemKind] = {
    errors.TooLarge: ProblemKind(413, "too-large", "Content too large"),
    errors.BodyStalled: ProblemKind(408, "body-stalled", "Request body stalled"),
    errors.InvalidInput: ProblemKind(422, "invalid-input", "Invalid input"),
    errors.NotFound: ProblemKind(404, "not-found", "Not found"),
    errors.AlreadyExists: ProblemKind(409, "already-exists", "Already exists"),
    errors.PoolExhausted: ProblemKind(409, "pool-exhausted", "Pool exhausted"),
    errors.AddressOverlap: ProblemKind(409, "overlap", "Overlaps an allocation"),
    errors.InUse: ProblemKind(409, "in-use", "In use"),
    errors.Refused: ProblemKind(409, "refused", "Refused as things stand"),
    errors.Forbidden: ProblemKind(403, "forbidden", "Forbidden"),
    errors.AuthError: ProblemKind(401, "unauthorized", "Authentication required"),
    errors.StoreUnavailable: ProblemKind(503, "store-unavailable", "etcd unreachable"),
    errors.Conflict: ProblemKind(409, "conflict", "Concurrent update"),
    errors.FencedOut: ProblemKind(503, "fenced-out", "Not the leader"),
    errors.Temporary: ProblemKind(503, "unavailable", "Temporarily unavailable"),
    errors.BrokerError: ProblemKind(500, "internal", "Internal broker error"),
    # the quota seam's errors, as the ledger raises them (broker.quotas)
    quota_errors.InvalidQuota: ProblemKind(422, "invalid-input", "Invalid input"),
    quota_errors.QuotaExceeded: ProblemKind(409, "quota-exceeded", "Quota exceeded"),
    quota_errors.ReservationExpired: ProblemKind(410, "reservation-expired", "Reservation expired"),
    quota_errors.ReservationNotFound: ProblemKind(404, "not-found", "Not found"),
    quota_errors.ReservationConflict: ProblemKind(
        409, "reservation-conflict", "Reservation conflict"
    ),
    quota_errors.QuotaError: ProblemKind(503, "unavailable", "Temporarily unavailable"),
}
Problem = errors.BrokerError | quota_errors.QuotaError


def mapping_for(exc: BaseException) -> ProblemKind:
    """The row of ``exc``'s class, or of its nearest base class that has one."""
    for cls in type(exc).__mro__:
        found = TABLE.get(cls)
        if found is not None:
            return found
    return TABLE[errors.BrokerError]


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"{TYPE_PREFIX}{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def _detail(exc: Problem) -> str:
    """What the user should read: what went wrong and what to do about it."""
    if isinstance(exc, quota_errors.QuotaError):
        return _quota_detail(exc)
    if isinstance(exc, errors.StoreUnavailable):
        return f"etcd unreachable: {exc}; retry in {_retry_seconds(exc.retry_after)} s"
    if isinstance(exc, errors.Conflict):
        return f"{exc}; re-read and retry"
    if isinstance(exc, errors.FencedOut):
        return f"{exc}; this replica is no longer the leader, retry shortly"
    if isinstance(exc, errors.Forbidden):
        return str(exc)
    if isinstance(exc, errors.AuthError):
        return f"{exc}; send a valid token as 'Authorization: Bearer <token>'"
    if isinstance(exc, errors.InvalidInput):
        return f"{exc.field}: {exc.problem}"
    return str(exc) or "the broker failed to handle this request"


def _quota_detail(exc: quota_errors.QuotaError) -> str:
    if isinstance(exc, quota_errors.QuotaExceeded):
        return f"{exc}; release reservations, delete resources or ask an admin for more"
    if isinstance(exc, quota_errors.InvalidQuota):
        return f"{exc.field}: {exc.problem}"
    if mapping_for(exc).status >= 500:
        return f"quota ledger: {exc}"
    return str(exc)


def _retry_seconds(retry_after: float) -> int:
    return max(1, math.ceil(retry_after))


def _extra(exc: Problem) -> tuple[str | None, dict[str, Any]]:
    """The field to blame, and what else the body carries (a refusal's numbers)."""
    if isinstance(exc, errors.InvalidInput | quota_errors.InvalidQuota):
        return exc.field, {}
    if isinstance(exc, quota_errors.QuotaExceeded):
        numbers = {
            "resource": exc.resource, "requested": exc.requested, "left": exc.left,
            "limit": exc.limit, "used": exc.used, "reserved": exc.reserved, "scope": exc.scope,
        }
        return f"deltas.{exc.resource}", numbers
    return None, {}


def from_error(exc: Problem) -> JSONResponse:
    m = mapping_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, errors.Temporary | quota_errors.Temporary):
        headers["Retry-After"] = str(_retry_seconds(exc.retry_after))
    elif isinstance(exc, errors.FencedOut) or m.status == 503:
        headers["Retry-After"] = "1"
    if m.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    field, extra = _extra(exc)
    return problem(m.status, m.slug, m.title, _detail(exc), field=field, headers=headers, **extra)


def dotted(loc: Sequence[Any]) -> str:
    """``("body", "geo", "lat")`` -> ``geo.lat``: the path as the user wrote it."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or "body"


def _field(err: dict[str, Any]) -> str:
    if err.get("type") == "json_invalid":
        return "body"
    return dotted(err.get("loc", ()))


def _message(err: dict[str, Any], allowed: Sequence[str]) -> str:
    kind = err.get("type")
    if kind == "extra_forbidden":
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return f"unknown field{hint}"
    if kind == "json_invalid":
        loc = list(err.get("loc", ()))
        where = f" (at character {loc[-1]})" if len(loc) > 1 else ""
        return f"the body is not valid JSON{where}"
    if kind == "missing" and list(err.get("loc", ())) == ["body"]:
        return "a JSON body is required"
    return str(err.get("msg", "invalid"))


def from_validation(
    exc: RequestValidationError, allowed: Mapping[str, Sequence[str]] | None = None
) -> JSONResponse:
    """FastAPI's 422, as problem+json: the first bad field in ``field``, all in ``errors``."""
    found = [
        {"field": _field(e), "problem": _message(e, _allowed_for(e, allowed or {}))}
        for e in exc.errors()
    ]
    if not found:
        found = [{"field": "body", "problem": "invalid request"}]
    first = found[0]
    detail = "; ".join(f"{f['field']}: {f['problem']}" for f in found)
    return problem(
        422, "invalid-input", "Invalid input", detail, field=first["field"], errors=found
    )


def _allowed_for(err: dict[str, Any], allowed: Mapping[str, Sequence[str]]) -> Sequence[str]:
    parent = dotted(list(err.get("loc", ()))[:-1])
    return allowed.get(parent, ())


def install(
    app: FastAPI, allowed_fields: Mapping[str, Mapping[str, Sequence[str]]] | None = None
) -> None:
    """Route every error of ``app`` through the table above.

    ``allowed_fields`` maps a request path, then a dotted parent path ("body" for the top
    level), to the fields accepted there, so an unknown field's problem can list what
    would have been right.
    """
    allowed = allowed_fields or {}

    async def on_broker_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.BrokerError | quota_errors.QuotaError)
        if mapping_for(exc).status >= 500 and not isinstance(
            exc, errors.StoreUnavailable | errors.FencedOut | quota_errors.QuotaError
        ):
            log.error("request failed", exc_info=exc)
        return from_error(exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return from_validation(exc, allowed.get(request.url.path))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http")
        detail = str(exc.detail)
        if exc.status_code in (404, 405):
            detail = f"no route for {request.method} {request.url.path}: see /docs"
        return problem(
            exc.status_code,
            slug,
            slug.replace("-", " ").capitalize(),
            detail,
            headers=dict(exc.headers or {}),
        )

    async def on_bug(_: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this handler, so the server logs the traceback once
        return problem(500, "internal", "Internal broker error", "the broker failed: see its log")

    app.add_exception_handler(errors.BrokerError, on_broker_error)
    app.add_exception_handler(quota_errors.QuotaError, on_broker_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_bug)
