"""Relays image chunks from a source agent to a destination agent through the broker.

Agents dial out, so neither can reach the other: a source keeps a ``Serve`` call open,
a destination's ``Pull`` becomes a ``ServeRequest`` on it, and the source's ``Upload``
call is piped into the ``Pull`` response through a queue of ``depth`` chunks.

Invariant: the broker holds at most ``depth`` chunks per transfer, never a whole image —
a full queue stops the relay reading the Upload call, and HTTP/2 flow control then
stops the source (backpressure end to end). The relay does not verify: the destination
checks every chunk's sha256 and the whole image (invariant 8); the relay binds each call
to the site named by the caller's certificate (invariant 5) and serves a ``Pull`` only
when the copy orders in etcd allow it (``imageaccess``: the caller has an order for that
image naming that source, which holds a verified replica), with a chunk size of at most
``replication.access.MAX_CHUNK`` — both checked before the source is asked for a byte.
``Replicate`` carries copy orders to a destination and its reports back, through
``imagefeed.ImageOrders``. Every open call is held by its certificate's serial: a
revocation (``feeds.Revocations`` calls ``close_serial``) ends the ones already open —
``Serve``, ``Pull`` and ``Replicate`` — UNAVAILABLE with the reason, as it ends the
agent's main stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from meridian.v1 import image_pb2 as ipb
from meridian.v1 import image_pb2_grpc as ipb_grpc

from broker import errors
from broker.gateway.imageaccess import PullAccess
from broker.gateway.imagefeed import ImageOrders
from broker.pki import identity
from replication import access
from replication.transfer import DEFAULT_CHUNK

log = logging.getLogger(__name__)


@dataclass
class _Transfer:
    source: str
    queue: asyncio.Queue[ipb.ImageChunk] = field(default_factory=lambda: asyncio.Queue(4))
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    uploading: bool = False


class Relay(ipb_grpc.ImageTransferServicer):
    """The ``ImageTransfer`` service of one broker replica."""

    def __init__(
        self,
        trust_domain: str,
        *,
        access: PullAccess,
        depth: int = 4,
        start_timeout: float = 10.0,
        chunk_timeout: float = 30.0,
        is_revoked: Callable[[int], bool] = lambda serial: False,
        orders: ImageOrders | None = None,
    ) -> None:
        self.trust_domain = trust_domain
        self.access = access
        self.depth = depth
        self.start_timeout = start_timeout
        self.chunk_timeout = chunk_timeout
        self.is_revoked = is_revoked
        self.orders = orders
        self._servers: dict[str, asyncio.Queue[ipb.ServeRequest]] = {}
        self._transfers: dict[str, _Transfer] = {}
        self._ids = itertools.count(1)
        self._open: dict[int, set[asyncio.Future[str]]] = {}  # by certificate serial
        self.peak_buffered = 0  # most chunks ever queued in one transfer (benchmarks read it)
        self.carried_bytes = 0  # image bytes relayed so far (benchmarks read it)

    def serving(self) -> frozenset[str]:
        return frozenset(self._servers)

    def close_serial(self, serial: int, reason: str) -> int:
        """End every open call made with the certificate ``serial``; returns how many."""
        held = [f for f in self._open.get(serial, ()) if not f.done()]
        for revoked in held:
            revoked.set_result(reason)
        return len(held)

    @contextlib.contextmanager
    def _revocable(self, serial: int) -> Iterator[asyncio.Future[str]]:
        """A future that ``close_serial`` completes with the reason, while the call runs."""
        revoked: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._open.setdefault(serial, set()).add(revoked)
        try:
            yield revoked
        finally:
            calls = self._open.get(serial, set())
            calls.discard(revoked)
            if not calls:
                self._open.pop(serial, None)

    async def _site(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        return (await self._caller(context))[0]

    async def _caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> tuple[str, int]:
        pems = context.auth_context().get("x509_pem_cert")
        if not pems:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no client certificate")
        try:
            site = identity.site_from_certificate(pems[0], self.trust_domain)
            serial = identity.serial_of(pems[0])
        except (errors.BrokerError, ValueError) as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        if self.is_revoked(serial):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"certificate {serial:x} revoked"
            )
        return str(site), serial

    async def Serve(
        self, request: ipb.ServeOpen, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[ipb.ServeRequest]:
        site, serial = await self._caller(context)
        inbox: asyncio.Queue[ipb.ServeRequest] = asyncio.Queue()
        self._servers[site] = inbox
        log.info("site %s: serving images", site)
        try:
            with self._revocable(serial) as revoked:
                await context.send_initial_metadata(())  # tells the agent it is registered
                while True:
                    ask: ipb.ServeRequest | None = await _unless(revoked, inbox.get())
                    if ask is None:
                        await context.abort(grpc.StatusCode.UNAVAILABLE, revoked.result())
                        return
                    yield ask
        finally:
            if self._servers.get(site) is inbox:
                del self._servers[site]
            for tr in self._transfers.values():
                if tr.source == site and not tr.uploading:
                    tr.closed.set()

    async def Pull(
        self, request: ipb.PullRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[ipb.ImageChunk]:
        site, serial = await self._caller(context)
        chunk_size = await self._authorize(site, request, context)
        with self._revocable(serial) as revoked:
            async for chunk in self._relayed(site, request, chunk_size, revoked, context):
                yield chunk

    async def _relayed(
        self,
        site: str,
        request: ipb.PullRequest,
        chunk_size: int,
        revoked: asyncio.Future[str],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[ipb.ImageChunk]:
        inbox = self._servers.get(request.source_site)
        if inbox is None:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"source site {request.source_site!r} is not connected to this broker",
            )
            return
        rid = f"{site}-{next(self._ids)}"
        tr = _Transfer(request.source_site, asyncio.Queue(self.depth))
        self._transfers[rid] = tr
        try:
            inbox.put_nowait(
                ipb.ServeRequest(
                    request_id=rid,
                    image_id=request.image_id,
                    offset=request.offset,
                    chunk_size=chunk_size,
                )
            )
            first = True
            while True:
                wait = self.start_timeout if first else self.chunk_timeout
                chunk = await self._next(tr, wait, revoked)
                first = False
                if revoked.done():
                    await context.abort(grpc.StatusCode.UNAVAILABLE, revoked.result())
                    return
                if chunk is None:
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE,
                        f"source site {request.source_site!r} went away mid-transfer",
                    )
                    return
                if chunk.error:
                    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, chunk.error)
                    return
                yield chunk
                if chunk.last:
                    return
        finally:
            tr.closed.set()
            del self._transfers[rid]

    async def _authorize(
        self, site: str, request: ipb.PullRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> int:
        """The chunk size to ask the source for, once the copy orders allow the pull."""
        chunk_size = access.bounded_chunk(request.chunk_size, DEFAULT_CHUNK)
        if not isinstance(chunk_size, int):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, chunk_size)
            raise AssertionError("abort returned")
        try:
            refused = await self.access.refusal(site, request.image_id, request.source_site)
        except errors.StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot check the copy orders: {exc}")
        if refused is not None:
            log.warning("site %s: pull refused: %s", site, refused)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refused)
        return chunk_size

    async def _next(
        self, tr: _Transfer, wait: float, revoked: asyncio.Future[str]
    ) -> ipb.ImageChunk | None:
        get = asyncio.ensure_future(tr.queue.get())
        closed = asyncio.ensure_future(tr.closed.wait())
        waits: set[asyncio.Future[Any]] = {get, closed, revoked}
        done, _ = await asyncio.wait(waits, timeout=wait, return_when="FIRST_COMPLETED")
        closed.cancel()
        if get in done:
            return get.result()
        get.cancel()
        return None

    async def Upload(
        self,
        request_iterator: AsyncIterator[ipb.ImageChunk],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> ipb.UploadDone:
        site = await self._site(context)
        tr: _Transfer | None = None
        finished = False
        try:
            async for chunk in request_iterator:
                if tr is None:
                    tr = self._transfers.get(chunk.request_id)
                    if tr is None or tr.source != site:
                        await context.abort(
                            grpc.StatusCode.NOT_FOUND, f"no transfer {chunk.request_id!r}"
                        )
                        return ipb.UploadDone()
                    tr.uploading = True
                if not await self._put(tr, chunk):
                    return ipb.UploadDone()  # the destination went away
                if chunk.last or chunk.error:
                    finished = True
                    break
        finally:
            if tr is not None and not finished:
                # the source died mid-upload: the pull ends UNAVAILABLE, the destination
                # resumes from its last verified offset
                tr.closed.set()
        return ipb.UploadDone()

    async def _put(self, tr: _Transfer, chunk: ipb.ImageChunk) -> bool:
        while not tr.closed.is_set():
            try:
                await asyncio.wait_for(tr.queue.put(chunk), 0.5)
            except TimeoutError:
                continue
            self.peak_buffered = max(self.peak_buffered, tr.queue.qsize())
            self.carried_bytes += len(chunk.data)
            return True
        return False

    async def Have(self, request: ipb.HaveRequest, context: Any) -> ipb.HaveReply:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "pieces are asked of sites")
        return ipb.HaveReply()

    async def Replicate(
        self,
        request_iterator: AsyncIterator[ipb.ImageReport],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[ipb.CopyOrder]:
        site, serial = await self._caller(context)
        if self.orders is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this relay takes no orders")
            return
        orders = self.orders
        outbox = orders.attach(site)

        async def read() -> None:
            async for msg in request_iterator:
                await orders.report(site, msg)

        reader = asyncio.create_task(read())
        try:
            with self._revocable(serial) as revoked:
                while True:
                    get = asyncio.ensure_future(outbox.get())
                    waits: set[asyncio.Future[Any]] = {get, reader, revoked}
                    done, _ = await asyncio.wait(waits, return_when="FIRST_COMPLETED")
                    if get not in done:
                        get.cancel()
                        if revoked.done():
                            await context.abort(grpc.StatusCode.UNAVAILABLE, revoked.result())
                        return  # the agent closed its side, or writing a report failed
                    yield get.result()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            orders.detach(site, outbox)


async def _unless(revoked: asyncio.Future[str], awaited: Awaitable[Any]) -> Any:
    """What ``awaited`` gives, or None once ``revoked`` is done first."""
    got = asyncio.ensure_future(awaited)
    done, _ = await asyncio.wait({got, revoked}, return_when="FIRST_COMPLETED")
    if got in done:
        return got.result()
    got.cancel()
    return None
