"""The API's front door: authenticate from the headers, then read a bounded body.

Invariant 11 (nobody unauthenticated costs the broker anything) rests on this module.
``Guard`` is a pure ASGI middleware in front of every route, so FastAPI never sees a
request it has not let through:

1. Every path but the few public ones (``PUBLIC``: probes, the scrape, the OpenAPI
   document) needs a token, and the token is validated from the headers alone — the
   body of an anonymous or wrongly authenticated request is never read: 401 at once,
   with ``Connection: close``, so the server hangs up instead of draining the rest for
   a keep-alive (having buffered at most its own read-ahead).
2. A declared ``Content-Length`` above the limit is refused (413) before any byte of the
   body is read; a chunked body is read while counting and refused (413) the moment it
   passes the limit. Only a body within the limit is handed on, replayed from memory, so
   a route never parses more than ``api.max_body_bytes`` (the etcd request limit is
   1.5 MiB: nothing larger could be stored anyway).
3. A body that stops arriving before its end (no byte for ``BODY_IDLE_SECONDS``) is
   refused (408, ``Connection: close``): a sender that stalls mid-body — or a client
   waiting for an answer to a body it has not finished — holds no connection for long.

The principal found here rides in the request scope (``PRINCIPAL``), so the role checks
in ``deps`` do not ask Keystone a second time. Refusals are problem+json like every
other error (``problems``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker import errors
from broker.api import problems
from broker.api.auth import Authenticator, Principal

PRINCIPAL = "meridian.principal"
"""Key of the authenticated ``Principal`` in the ASGI scope's ``state``."""

PUBLIC = frozenset(
    {"/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
"""Paths served without a token (probes, scrapers, the API's own description)."""

PUBLIC_BODY_BYTES = 4096
"""The most an unauthenticated request may send: public paths take no body."""

BODY_IDLE_SECONDS = 10.0
"""The longest a body may go without a byte arriving before it is refused (408)."""


def too_large(limit: int, size: int | None = None) -> errors.TooLarge:
    said = f"{size} bytes" if size is not None else f"more than {limit} bytes"
    return errors.TooLarge("body", f"is {said}; this API accepts at most {limit} bytes")


def token_of(headers: Headers) -> str:
    """The token from ``Authorization: Bearer`` or OpenStack's ``X-Auth-Token``."""
    header = headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if header:
        raise errors.AuthError("the Authorization header must be 'Bearer <token>'")
    token = headers.get("x-auth-token", "").strip()
    if not token:
        raise errors.AuthError("no token")
    return token


def _declared_length(headers: Headers) -> int | None:
    raw = headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise errors.InvalidInput("Content-Length", "must be a non-negative integer")
    return int(raw)


async def read_bounded(
    receive: Receive, limit: int, idle: float = BODY_IDLE_SECONDS
) -> tuple[bytes, bool]:
    """The whole body, refusing it once it passes ``limit`` or stalls for ``idle``
    seconds; and whether the client left."""
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            async with asyncio.timeout(idle):
                message = await receive()
        except TimeoutError:
            raise errors.BodyStalled(
                "body", f"no byte arrived for {idle:g} s after {size} bytes"
            ) from None
        if message["type"] == "http.disconnect":
            return b"", True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    """A ``receive`` that gives ``body`` once, then waits on the real one (disconnects)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


class Guard:
    """Pure ASGI middleware: token first, then a body of at most ``max_body_bytes``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: Authenticator,
        max_body_bytes: int,
        body_idle: float = BODY_IDLE_SECONDS,
    ) -> None:
        self.app = app
        self.auth = auth
        self.max_body_bytes = max_body_bytes
        self.body_idle = body_idle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        public = scope["path"] in PUBLIC
        limit = PUBLIC_BODY_BYTES if public else self.max_body_bytes
        try:
            if not public:
                who = await self.auth.authenticate(token_of(headers))
                scope.setdefault("state", {})[PRINCIPAL] = who
            declared = _declared_length(headers)
            if declared is not None and declared > limit:
                raise too_large(limit, declared)
            body, gone = await read_bounded(receive, limit, self.body_idle)
        except errors.BrokerError as exc:
            refusal = problems.from_error(exc)
            # the unread rest of the body is not drained for a keep-alive: hang up
            refusal.headers["connection"] = "close"
            await refusal(scope, receive, send)
            return
        if gone:
            return
        await self.app(scope, replay(body, receive), send)


def principal_in(scope: Scope) -> Principal | None:
    """The principal ``Guard`` authenticated for this request, if it did."""
    found = scope.get("state", {}).get(PRINCIPAL)
    return found if isinstance(found, Principal) else None
