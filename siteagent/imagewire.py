"""The agent's side of the ImageTransfer service: serve local images, pull remote ones.

``ImageServer`` keeps the source side's standing ``Serve`` call open and answers each
request with one ``Upload`` call, reading from the site's byte store; ``PullSource`` is a
``replication.transfer.ByteSource`` that reads another site's image through the broker.
This is the boundary where grpc errors become ``replication.errors``: a dropped call is
``PeerGone`` (temporary: the copy resumes from the last verified offset), a source that
cannot serve is ``SourceFailed``. ``ImageAgent`` is the whole image side of a site: it
serves the site's store on every broker replica, takes copy orders on its standing
``Replicate`` calls, copies (reusing bytes it already holds when their digest matches),
reports progress, and audits what it holds every ``audit_interval`` seconds. What it
holds is an ``ImageStore``: a directory for a sim site (``SiteDir``), the site's Glance for
an openstack one (``glancestore.GlanceImages``, bytes staged in the same directory).
Invariant: a request's chunk size is bounded (``replication.access.MAX_CHUNK``) before
the store reads a byte; the agent sends each chunk's sha256 of the bytes it read, so
whatever changes them on the way is caught by the destination; it reports ``active`` only
after ``transfer.copy`` verified the whole image against the order's digests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol
from dataclasses import dataclass

import grpc
from meridian.v1 import image_pb2 as ipb
from meridian.v1 import image_pb2_grpc as ipb_grpc

from replication import access, catalog, errors, grant, pieces, transfer
from replication.catalog import ImageId, SiteId
from replication.dirstore import DirBytes
from replication.pieces import PieceFile
from replication import throttle
from replication.throttle import Throttle, Throttled
from replication.transfer import ByteSink, ByteSource, Channel, Chunk, passthrough
from siteagent import directwire, swarmwire
from siteagent.directwire import CHANNEL_OPTIONS, translate
from siteagent.settings import AgentSettings

log = logging.getLogger(__name__)


class ImageStore(ByteSource, ByteSink, Protocol):
    """A site's image store: the sim's ``SiteDir`` or an openstack site's Glance
    (``glancestore.GlanceImages``)."""

    def chunks(
        self, image: ImageId, offset: int, chunk_size: int, *, digests: bool = True
    ) -> AsyncIterator[Chunk]:
        """Chunks from ``offset``, each with its sha256 unless ``digests`` is false."""
        ...

    async def holds(self, image: ImageId) -> bool:
        """Whether a committed copy of ``image`` is here."""
        ...

    async def listing(self) -> list[ImageId]:
        """Every committed image, sorted."""
        ...

    async def digest(self, image: ImageId) -> tuple[str, int]:
        """(sha256, size) re-computed from the committed bytes."""
        ...

    async def remove(self, image: ImageId) -> None:
        """Drop a committed copy and any partial one."""
        ...

    async def expect(self, image: catalog.Image) -> None:
        """The catalog entry the next copy into this store will carry."""
        ...

    async def adopt(self, image: catalog.Image) -> None:
        """A swarmed image, verified whole as ``<id>.img`` in the agent's image directory
        (``pieces.PieceFile.finish``), becomes the committed copy."""
        ...


class SiteDir(DirBytes):
    """A sim site's image directory as an ``ImageStore``."""

    async def holds(self, image: ImageId) -> bool:
        return self.has(image)

    async def listing(self) -> list[ImageId]:
        return self.held()

    async def expect(self, image: catalog.Image) -> None:
        return None

    async def adopt(self, image: catalog.Image) -> None:
        """The swarm finished into this directory: ``<id>.img`` is already committed."""
        if not self.has(image.id):
            raise errors.SinkRejected(f"the swarmed {image.id} is not in {self.root}")


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
            size = access.bounded_chunk(request.chunk_size, transfer.DEFAULT_CHUNK)
            if isinstance(size, str):  # refused before any read: a read allocates its size
                yield ipb.ImageChunk(request_id=rid, offset=request.offset, error=size)
                return
            try:
                chunks = self._store.chunks(ImageId(request.image_id), request.offset, size)
                async for c in transfer.prefetch(chunks):
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
    """Reads ``source_site``'s copy of an image through the broker relay (each chunk with
    its own sha256, or a prefix digest where the source sends one: ``ImageChunk.prefix``)."""

    def __init__(self, channel: grpc.aio.Channel, source_site: str) -> None:
        self._stub = ipb_grpc.ImageTransferStub(channel)
        self.source_site = source_site

    def _request(self, image: ImageId, offset: int, chunk_size: int) -> ipb.PullRequest:
        return ipb.PullRequest(
            image_id=image, source_site=self.source_site, offset=offset, chunk_size=chunk_size
        )

    async def chunks(self, image: ImageId, offset: int, chunk_size: int) -> AsyncIterator[Chunk]:
        call = self._stub.Pull(self._request(image, offset, chunk_size))
        try:
            async for msg in call:
                if msg.last:
                    return
                yield Chunk(msg.offset, msg.data, msg.sha256, prefix=msg.prefix)
            raise errors.PeerGone(f"the transfer from {self.source_site} was cut short")
        except grpc.aio.AioRpcError as exc:
            raise translate(exc) from exc
        finally:
            call.cancel()


class DirectSource(PullSource):
    """Reads ``source_site``'s copy from the site's own address (``directwire``), presenting
    the broker's transfer grant ``token`` and asking for prefix digests (the sink hashes
    each byte once: ``replication.fold.Received``); errors translate as through the relay."""

    def __init__(self, channel: grpc.aio.Channel, source_site: str, token: str) -> None:
        super().__init__(channel, source_site)
        self.token = token

    def _request(self, image: ImageId, offset: int, chunk_size: int) -> ipb.PullRequest:
        request = super()._request(image, offset, chunk_size)
        request.grant = self.token
        request.prefix_digests = True
        return request


@dataclass
class _Copy:
    attempt: int
    task: asyncio.Task[None]
    channel: grpc.aio.Channel
    outbox: asyncio.Queue[ipb.ImageReport]


def image_of(order: ipb.CopyOrder) -> catalog.Image:
    """The catalog entry an order names (raises ``InvalidImage`` on a malformed one)."""
    return catalog.Image(
        id=ImageId(order.image_id),
        name=order.name or order.image_id,
        size=order.size,
        sha256=order.sha256,
        source_site=SiteId(order.source_site),
        os_hash_algo=order.os_hash_algo or "sha512",
        os_hash_value=order.os_hash_value,
    )


class ImageAgent:
    """A site's image service on every broker replica, until cancelled."""

    def __init__(
        self,
        channels: Sequence[grpc.aio.Channel],
        store: ImageStore,
        *,
        audit_interval: float = 30.0,
        chunk_size: int = transfer.DEFAULT_CHUNK,
        retry_delay: float = 1.0,
        throttle: Throttle | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        direct_address: str = "",
        download: Throttle | None = None,
        site: str = "",
        pieces_dir: Path | None = None,
        swarms: dict[ImageId, PieceFile] | None = None,
        piece_size: int = pieces.DEFAULT_PIECE,
    ) -> None:
        self.piece_size = piece_size  # of the piece lists this site reports
        self.download = download  # the site's cap on bytes/s received, shared by all copies
        self.site = site
        # swarming: where pieces arrive, and the copies arriving (what the site's
        # DirectServer serves pieces of while they arrive); None: this site cannot swarm
        self.pieces_dir = pieces_dir
        self.swarms = swarms if swarms is not None else {}
        self._lists: dict[tuple[ImageId, str], str] = {}  # (image, sha256) -> piece list
        self.channels = list(channels)
        self.credentials = credentials  # for direct pulls from other sites ("" = relay only)
        self.direct_address = direct_address  # where this site serves directly, reported
        self._peers: dict[str, grpc.aio.Channel] = {}
        self.throttle = throttle  # one bucket for the uploads on every broker replica
        self.store = store
        self.audit_interval = audit_interval
        self.chunk_size = chunk_size
        self.retry_delay = retry_delay
        self._copies: dict[ImageId, _Copy] = {}
        self._busy: set[ImageId] = set()  # copied or copying since the last audit began
        self._live: list[asyncio.Queue[ipb.ImageReport]] = []  # outboxes of open calls

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for channel in self.channels:
                    group.create_task(self._forever(self._serve, channel))
                    group.create_task(self._forever(self._replicate, channel))
        finally:
            for peer in self._peers.values():
                await peer.close(grace=None)

    async def _forever(self, body: Any, channel: grpc.aio.Channel) -> None:
        while True:
            try:
                await body(channel)
            except (errors.ReplicationError, grpc.aio.AioRpcError) as exc:
                log.info("image service call ended: %s", exc)
            await asyncio.sleep(self.retry_delay)

    async def _serve(self, channel: grpc.aio.Channel) -> None:
        await ImageServer(channel, self.store, throttle=self.throttle).run()

    async def _replicate(self, channel: grpc.aio.Channel) -> None:
        outbox: asyncio.Queue[ipb.ImageReport] = asyncio.Queue()

        async def reports() -> AsyncIterator[ipb.ImageReport]:
            while True:
                yield await outbox.get()

        async def audits() -> None:
            while True:
                outbox.put_nowait(await self.audit())
                await asyncio.sleep(self.audit_interval)

        call = ipb_grpc.ImageTransferStub(channel).Replicate(reports())
        auditor = asyncio.create_task(audits())
        self._live.append(outbox)
        try:
            async for order in call:
                self._order(order, channel, outbox)
        finally:
            self._live.remove(outbox)
            auditor.cancel()
            call.cancel()
            await asyncio.gather(auditor, return_exceptions=True)

    async def _pull(
        self,
        image: catalog.Image,
        order: ipb.CopyOrder,
        channel: grpc.aio.Channel,
        progress: transfer.Progress,
        via: dict[str, str],
    ) -> None:
        """Copy from the source's own address where the order gives one, else (or when it
        does not answer) through the relay, resuming from the verified bytes; ``via``
        says which path is in use."""
        chunk_size = order.chunk_size or self.chunk_size
        sources: list[tuple[str, ByteSource]] = [("relay", PullSource(channel, order.source_site))]
        direct = self._direct(order)
        if direct is not None:
            sources.insert(0, ("direct", direct))
        for n, (path, source) in enumerate(sources, 1):
            via["path"] = path
            if self.download is not None:
                source = Throttled(source, self.download)
            try:
                await transfer.copy(
                    image, source, self.store, chunk_size=chunk_size, progress=progress
                )
                return
            except errors.PeerGone as exc:  # no path after all: the relay resumes
                if n == len(sources):
                    raise
                log.info("image %s: no direct path (%s), via the relay", image.id, exc)

    def _direct(self, order: ipb.CopyOrder) -> DirectSource | None:
        """The source's own address under the order's grant, where the broker gave one."""
        if not order.source_address or not order.grant or self.credentials is None:
            return None
        channel = self._channel(order.source_site, order.source_address, self.credentials)
        return DirectSource(channel, order.source_site, order.grant)

    def _channel(
        self, site: str, address: str, credentials: grpc.ChannelCredentials
    ) -> grpc.aio.Channel:
        """One channel per peer address; the TLS handshake checks that the answer holds
        ``site``'s serving certificate, not any other site's."""
        key = f"{site}@{address}"
        channel = self._peers.get(key)
        if channel is None:
            name = ("grpc.ssl_target_name_override", grant.server_name(site))
            channel = grpc.aio.secure_channel(
                address, credentials, options=[*CHANNEL_OPTIONS, name]
            )
            self._peers[key] = channel
        return channel

    async def _swarm(
        self, image: catalog.Image, order: ipb.CopyOrder, progress: transfer.Progress
    ) -> None:
        """Fetch ``image`` in pieces from the peers the order names (each under its own
        grant), serving the pieces verified meanwhile; then the store adopts it."""
        if self.pieces_dir is None or self.credentials is None:
            raise errors.SourceFailed(f"{self.site or 'this site'} cannot swarm: no image dir")
        try:
            manifest = pieces.Manifest.from_dict(json.loads(order.pieces))
        except ValueError as exc:
            raise errors.InvalidImage("pieces", f"the order's piece list: {exc}") from exc
        peers = [
            swarmwire.GrantedPeer(
                self._channel(p.site, p.address, self.credentials),
                p.site,
                p.grant,
                manifest,
                chunk_size=order.chunk_size or self.chunk_size,
                download=self.download,
            )
            for p in order.peers
            if p.address
        ]

        async def corrupt(peer: str, why: str) -> None:
            log.warning("image %s: peer %s excluded: %s", image.id, peer, why)

        out = await swarmwire.receive(
            self.pieces_dir,
            image,
            manifest,
            peers,
            self.swarms,
            seed=self.site,
            report=corrupt,
            progress=progress,
        )
        log.info("image %s swarmed in %.1fs: %s", image.id, out.seconds, out.pieces_from)
        await self.store.adopt(image)

    async def _piece_lists(self, held: list[tuple[ImageId, str, int]]) -> list[ipb.PieceList]:
        """The piece list of every image held (computed once per image and digest)."""
        out = []
        for image, sha, size in held:
            listed = self._lists.get((image, sha))
            if listed is None:
                try:
                    manifest = await pieces.manifest_of_source(
                        self.store, image, size, self.piece_size
                    )
                except errors.ReplicationError:
                    continue
                if len(manifest) > pieces.MAX_RECORDED or manifest.size != size:
                    continue
                listed = json.dumps(manifest.to_dict(), sort_keys=True, separators=(",", ":"))
                self._lists[(image, sha)] = listed
            out.append(ipb.PieceList(image_id=image, sha256=sha, pieces=listed))
        return out

    async def audit(self) -> ipb.ImageReport:
        """Every image held, with its sha256 re-computed from the bytes (drift audit)."""
        self._busy = {i for i, c in self._copies.items() if not c.task.done()}
        report = ipb.ImageReport(audit=True, direct_address=self.direct_address)
        held = []
        for image in await self.store.listing():
            try:
                sha, size = await self.store.digest(image)
            except errors.ImageChanging:
                self._busy.add(image)  # being put in place: judged by the next audit
                continue
            except errors.ReplicationError:
                continue  # removed while auditing: it is missing, and reported so
            report.replicas.append(
                ipb.ReplicaReport(image_id=image, state="active", sha256=sha, size=size)
            )
            held.append((image, sha, size))
        if self.pieces_dir is not None:  # a site that swarms lists its images' pieces
            report.piece_lists.extend(await self._piece_lists(held))
        for image in sorted(self._busy):  # copies that ran during the audit: not judged
            report.replicas.append(ipb.ReplicaReport(image_id=image, state="busy"))
        return report

    def _order(
        self,
        order: ipb.CopyOrder,
        channel: grpc.aio.Channel,
        outbox: asyncio.Queue[ipb.ImageReport],
    ) -> None:
        image = ImageId(order.image_id)
        held = self._copies.get(image)
        if held is not None and held.attempt >= order.attempt:
            return  # the same order from another broker replica, or a stale one
        if held is not None:
            held.task.cancel()
        task = asyncio.create_task(self._copy(order, channel, outbox))
        self._copies[image] = _Copy(order.attempt, task, channel, outbox)
        self._busy.add(image)

    async def _copy(
        self,
        order: ipb.CopyOrder,
        channel: grpc.aio.Channel,
        outbox: asyncio.Queue[ipb.ImageReport],
    ) -> None:
        def send(state: str, **fields: Any) -> None:
            report = ipb.ReplicaReport(
                image_id=order.image_id, state=state, attempt=order.attempt, **fields
            )
            # on the call the order came by; if that broker replica went away, on another
            live = outbox if outbox in self._live or not self._live else self._live[0]
            live.put_nowait(ipb.ImageReport(replicas=[report]))

        path = "swarm" if order.swarm else "direct" if self._direct(order) else "relay"
        via = {"path": path}

        async def progress(offset: int, rate: float) -> None:
            send("transferring", offset=offset, rate=rate, path=via["path"])

        try:
            image = image_of(order)
            if await self.store.holds(image.id):
                sha, size = await self.store.digest(image.id)
                if sha == image.sha256 and size == image.size:
                    send("active", offset=size, sha256=sha, size=size)  # reuse the bytes
                    return
                await self.store.remove(image.id)  # drifted: copy afresh
            await self.store.expect(image)
            started = time.monotonic()
            resume = await self.store.verified_offset(image.id)
            if order.swarm:
                log.info("image %s: swarming from %d peers", image.id, len(order.peers))
                await self._swarm(image, order, progress)
            else:
                source = order.source_site
                log.info("image %s: copying from %s at byte %d", image.id, source, resume)
                await self._pull(image, order, channel, progress, via)
            log.info("image %s copied in %.1fs", image.id, time.monotonic() - started)
            send("active", offset=image.size, sha256=image.sha256, size=image.size, **via)
        except errors.ReplicationError as exc:
            temporary = isinstance(exc, errors.Temporary | errors.SourceFailed)
            send("failed", reason=f"{type(exc).__name__}: {exc}", temporary=temporary)


def link_cap(rate: float, windows: Sequence[str]) -> Throttle | None:
    """One direction's cap: ``rate`` bytes/s (0: none) and the time-of-day windows."""
    if rate <= 0 and not windows:
        return None
    parsed = [throttle.parse_window(w) for w in windows]
    return Throttle(rate if rate > 0 else float("inf"), windows=parsed)


async def run_agent(settings: AgentSettings, credentials: grpc.ChannelCredentials) -> None:
    """The site's image service on every broker replica, from its settings."""
    options = [*CHANNEL_OPTIONS, ("grpc.keepalive_time_ms", 10_000)]
    channels = [
        grpc.aio.secure_channel(b, credentials, options=options) for b in settings.session.brokers
    ]
    cfg = settings.images
    store: ImageStore = SiteDir(Path(cfg.dir))
    glance = None
    if settings.driver == "openstack":  # Glance holds the images; cfg.dir only stages them
        from siteagent import glancestore  # openstacksdk only where a site has OpenStack

        store = glance = glancestore.GlanceImages(settings.openstack.cloud, Path(cfg.dir))
    throttle = link_cap(cfg.upload_rate, cfg.upload_windows)
    download = link_cap(cfg.download_rate, cfg.download_windows)
    swarms: dict[ImageId, PieceFile] = {}  # served by the direct server while arriving
    direct = directwire.from_settings(settings, store, throttle, swarms)
    agent = ImageAgent(
        channels,
        store,
        audit_interval=cfg.audit_interval,
        throttle=throttle,
        credentials=credentials if cfg.dial_peers else None,
        direct_address=cfg.direct_address or cfg.direct_listen,
        download=download,
        site=settings.site_id,
        pieces_dir=Path(cfg.dir) if cfg.dial_peers else None,
        swarms=swarms,
        piece_size=cfg.piece_size,
    )
    try:
        if direct is not None:
            await direct.start()
        await agent.run()
    finally:
        if direct is not None:
            await direct.stop(grace=None)
        if glance is not None:
            glance.close()
        for channel in channels:
            await channel.close(grace=None)
