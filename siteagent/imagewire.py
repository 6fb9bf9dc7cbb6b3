"""The agent's side of the ImageTransfer service: serve local images, pull remote ones.

``ImageServer`` keeps the source side's standing ``Serve`` call open and answers each
request with one ``Upload`` call, reading from the site's byte store; ``PullSource`` is a
``replication.transfer.ByteSource`` that reads another site's image through the broker.
This is the boundary where grpc errors become ``replication.errors``: a dropped call is
``PeerGone`` (temporary: the copy resumes from the last verified offset), a source that
cannot serve is ``SourceFailed``. Invariant: the agent sends each chunk's sha256 of the
bytes it read, so whatever changes them on the way is caught by the destination.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from meridian.v1 import image_pb2 as ipb
from meridian.v1 import image_pb2_grpc as ipb_grpc

from replication import errors
from replication.catalog import ImageId
from replication.throttle import Throttle
from replication.transfer import ByteSource, Channel, Chunk, passthrough

log = logging.getLogger(__name__)

# OPENSTACK HOOK (issue 6, openstack tier -- not wired yet): the openstack driver, being
# built separately, plugs in here by passing ImageServer a ByteSource that streams Glance
# image data, and by giving transfer.copy a ByteSink whose commit() uploads to the
# destination Glance and compares Glance's reported os_hash_value with the catalog
# before the replica is marked active. The minicloud site 1 -> site 2 test belongs in
# tests/integration/ with the `openstack` marker once that driver lands.

_GONE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
)


def translate(exc: grpc.aio.AioRpcError) -> errors.ReplicationError:
    code = exc.code()
    detail = exc.details() or code.name
    if code in _GONE:
        return errors.PeerGone(detail)
    return errors.SourceFailed(detail)


class ImageServer:
    """Serves this site's images to the broker relay until cancelled."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        store: ByteSource,
        *,
        max_streams: int = 4,
        hook: Channel = passthrough,
        throttle: Throttle | None = None,
    ) -> None:
        self._stub = ipb_grpc.ImageTransferStub(channel)
        self._store = store
        self._max_streams = max_streams
        self._hook = hook  # tests flip bits here, after the sha256 was taken
        self._throttle = throttle  # the site's upload bandwidth cap, shared by all uploads
        self._uploads: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        call = self._stub.Serve(ipb.ServeOpen(max_streams=self._max_streams))
        try:
            await call.initial_metadata()
            self.ready.set()
            async for request in call:
                task = asyncio.create_task(self._upload(request))
                self._uploads.add(task)
                task.add_done_callback(self._uploads.discard)
        except grpc.aio.AioRpcError as exc:
            raise translate(exc) from exc
        finally:
            call.cancel()
            for task in list(self._uploads):
                task.cancel()
            await asyncio.gather(*self._uploads, return_exceptions=True)

    async def _upload(self, request: ipb.ServeRequest) -> None:
        rid = request.request_id

        async def chunks() -> AsyncIterator[ipb.ImageChunk]:
            try:
                async for c in self._store.chunks(
                    ImageId(request.image_id), request.offset, request.chunk_size or 1 << 20
                ):
                    if self._throttle is not None:
                        await self._throttle.take(len(c.data))
                    c = self._hook(c)
                    yield ipb.ImageChunk(
                        request_id=rid, offset=c.offset, data=c.data, sha256=c.sha256
                    )
            except errors.ReplicationError as exc:
                yield ipb.ImageChunk(request_id=rid, offset=request.offset, error=str(exc))
                return
            yield ipb.ImageChunk(request_id=rid, last=True)

        try:
            await self._stub.Upload(chunks())
        except grpc.aio.AioRpcError as exc:
            log.info("upload %s ended: %s", rid, exc.details())


class PullSource:
    """Reads ``source_site``'s copy of an image through the broker relay."""

    def __init__(self, channel: grpc.aio.Channel, source_site: str) -> None:
        self._stub = ipb_grpc.ImageTransferStub(channel)
        self.source_site = source_site

    async def chunks(self, image: ImageId, offset: int, chunk_size: int) -> AsyncIterator[Chunk]:
        call = self._stub.Pull(
            ipb.PullRequest(
                image_id=image,
                source_site=self.source_site,
                offset=offset,
                chunk_size=chunk_size,
            )
        )
        try:
            async for msg in call:
                if msg.last:
                    return
                yield Chunk(msg.offset, msg.data, msg.sha256)
            raise errors.PeerGone(f"the transfer from {self.source_site} was cut short")
        except grpc.aio.AioRpcError as exc:
            raise translate(exc) from exc
        finally:
            call.cancel()
