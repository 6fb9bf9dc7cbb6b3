"""Direct site-to-site image transfers: an agent serves its verified images to other sites
on its own mTLS address, and pulls from a peer's address, under a broker-signed grant.

``DirectServer`` is the ``ImageTransfer.Pull`` of a site that accepts inbound connections
(the federation CA verifies the caller's certificate; its SPIFFE URI names the calling
site); ``imagewire.DirectSource`` reads a peer's image over such a connection. Sites
behind NAT do not run a ``DirectServer``; copies from them go through the broker relay
(``imagewire.PullSource``).

Invariant: before the store reads a byte, the request's grant must be the broker's
signature over this image, this site as source and the caller as destination, unexpired
(``replication.grant.refusal``), and the chunk size within ``access.MAX_CHUNK``; only
committed (verified) images are served — a copy still arriving is refused here. Each
chunk carries the sha256 of the bytes read, so the destination verifies as with the relay
— for a whole image asked with ``prefix_digests``, the sha256 of the image up to the
chunk's end (``transfer.prefixed``: the destination's one pass over the bytes checks each
chunk and computes the whole-image digest).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import grpc
from cryptography import x509
from meridian.v1 import image_pb2 as ipb
from meridian.v1 import image_pb2_grpc as ipb_grpc

from replication import access, errors, grant, pieces, transfer
from replication.catalog import ImageId
from replication.pieces import PieceFile
from replication.throttle import Throttle
from replication.transfer import ByteSource, Chunk
from siteagent import errors as agent_errors
from siteagent.settings import AgentSettings

log = logging.getLogger(__name__)

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 8 << 20),
    ("grpc.max_send_message_length", 8 << 20),
]


_GONE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
)


def translate(exc: grpc.aio.AioRpcError) -> errors.ReplicationError:
    """The one boundary for a peer's or the relay's grpc errors: a dropped call is
    ``PeerGone`` (temporary: resume from the verified bytes), anything else
    ``SourceFailed``."""
    code = exc.code()
    detail = exc.details() or code.name
    if code in _GONE:
        return errors.PeerGone(detail)
    return errors.SourceFailed(detail)


class Holding(ByteSource, Protocol):
    async def holds(self, image: ImageId) -> bool:
        """Whether a committed (verified) copy of ``image`` is here."""
        ...

    def chunks(
        self, image: ImageId, offset: int, chunk_size: int, *, digests: bool = True
    ) -> AsyncIterator[Chunk]:
        """Chunks from ``offset``, each with its sha256 unless ``digests`` is false."""
        ...


def caller_site(pem: bytes) -> str | None:
    """The site id of a ``spiffe://<domain>/site/<id>`` client certificate (else ``None``)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1 or not uris[0].startswith("spiffe://"):
        return None
    parts = uris[0][len("spiffe://") :].split("/")
    if len(parts) != 3 or parts[1] != "site" or not access.valid_id(parts[2]):
        return None
    return parts[2]


async def _upto(chunks: AsyncIterator[Chunk], end: int) -> AsyncIterator[Chunk]:
    """``chunks`` cut at byte ``end`` (a piece's end); ``end`` at the offset: no cut."""
    async for c in chunks:
        if end > c.offset and c.offset + len(c.data) >= end:
            yield Chunk.of(c.offset, c.data[: end - c.offset])
            return
        yield c


async def _piece(file: PieceFile, offset: int, length: int, size: int) -> AsyncIterator[Chunk]:
    """One verified piece of a copy still arriving, in ``size`` chunks (``SourceFailed``
    if it is not held)."""
    i = file.manifest.piece_at(offset, length)
    if i is None:
        raise errors.SourceFailed(f"[{offset}, +{length}) is not a piece of {file.image.id}")
    data = memoryview(await file.read(i))
    for at in range(0, len(data), size):
        yield await transfer.hashed(offset + at, bytes(data[at : at + size]))


class DirectServer(ipb_grpc.ImageTransferServicer):
    """Serves ``site``'s verified images to callers holding a grant for them."""

    def __init__(
        self,
        site: str,
        store: Holding,
        key: grant.Ed25519PublicKey,
        *,
        throttle: Throttle | None = None,
        clock: Callable[[], float] = time.time,
        swarms: dict[ImageId, PieceFile] | None = None,
        max_pieces: int = 4,
    ) -> None:
        self.site = site
        # pieces served at once; beyond, a swarm's peer is told to ask elsewhere (choked):
        # a source then seeds distinct pieces that the destinations trade among themselves
        self.max_pieces = max_pieces
        self.pieces_out = 0
        # seeding evenly: per piece list of an image held whole, how many pieces it has and
        # how often each went out; a piece sent more often than the least sent one is
        # refused (ask a peer), so the source's link carries distinct pieces first
        self.seeded: dict[tuple[str, str], tuple[int, dict[int, int]]] = {}
        self.swarms = swarms if swarms is not None else {}  # copies arriving in pieces
        self.store = store
        self.key = key
        self.grants = grant.Verifier(key)  # each grant's signature checked once
        self.throttle = throttle  # the site's upload cap, shared with the relay uploads
        self.clock = clock
        self.served_bytes = 0
        self.refused: list[str] = []

    async def _refuse(self, context: Any, code: grpc.StatusCode, why: str) -> None:
        self.refused.append(why)
        log.warning("direct pull refused: %s", why)
        await context.abort(code, why)

    async def _authorized(
        self, context: Any, image: str, source: str, token: str, pieces: str
    ) -> bool:
        """The grant check every call passes before the store reads a byte (else aborted)."""
        pems = context.auth_context().get("x509_pem_cert")
        caller = caller_site(pems[0]) if pems else None
        if caller is None:
            await self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, "no site certificate")
            return False
        why = self.grants.refusal(
            token,
            image=image,
            source=self.site,
            caller=caller,
            now_ms=int(self.clock() * 1000),
            pieces=pieces,
        )
        if why is None and source != self.site:
            why = f"this is site {self.site}, not {source}"
        if why is not None:
            await self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, why)
            return False
        return True

    def _swarm(self, image: ImageId, pieces: str) -> PieceFile | None:
        """The copy of ``image`` arriving here in pieces of the list ``pieces`` names."""
        file = self.swarms.get(image)
        return file if file is not None and file.manifest.digest() == pieces else None

    async def Have(self, request: ipb.HaveRequest, context: Any) -> ipb.HaveReply:
        image = ImageId(request.image_id)
        ok = await self._authorized(
            context, image, request.source_site, request.grant, request.pieces
        )
        if not ok:
            return ipb.HaveReply()
        if request.count > pieces.MAX_PIECES:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "too many pieces")
            return ipb.HaveReply()
        if await self.store.holds(image):
            self.seeded.setdefault((image, request.pieces), (request.count, {}))
            return ipb.HaveReply(bitmap=pieces.bitmap(range(request.count), request.count))
        file = self._swarm(image, request.pieces)
        held = file.held if file is not None else set()
        return ipb.HaveReply(bitmap=pieces.bitmap(held, request.count))

    def _choked(self, request: ipb.PullRequest) -> str | None:
        """Why this piece request should go to another holder (``None``: serve it)."""
        if self.pieces_out >= self.max_pieces:
            return f"{self.site} is serving {self.pieces_out} pieces: ask another holder"
        count, sent = self.seeded.get((request.image_id, request.pieces), (0, {}))
        least = min(sent.values()) if count and len(sent) >= count else 0
        if sent.get(request.offset, 0) > least:
            return f"{self.site} sent this piece more than others: ask another holder"
        if count:
            sent[request.offset] = sent.get(request.offset, 0) + 1
        return None

    async def Pull(
        self, request: ipb.PullRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[ipb.ImageChunk]:
        image = ImageId(request.image_id)
        ok = await self._authorized(
            context, image, request.source_site, request.grant, request.pieces
        )
        if not ok:
            return
        size = access.bounded_chunk(request.chunk_size, transfer.DEFAULT_CHUNK)
        if isinstance(size, str):
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, size)
            return
        if await self.store.holds(image) and request.prefix_digests and not request.length:
            # read from byte 0, each byte hashed once into the running digest
            whole = self.store.chunks(image, 0, size, digests=False)
            chunks = transfer.prefixed(whole, request.offset)
        elif await self.store.holds(image):
            chunks = self.store.chunks(image, request.offset, size)
        elif (file := self._swarm(image, request.pieces)) is not None:
            chunks = _piece(file, request.offset, request.length, size)
        else:
            await self._refuse(
                context, grpc.StatusCode.FAILED_PRECONDITION, f"no verified copy of {image}"
            )
            return
        piece = 1 if request.length else 0
        busy = self._choked(request) if piece else None
        if busy is not None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, busy)
            return
        self.pieces_out += piece
        try:
            async for c in transfer.prefetch(_upto(chunks, request.offset + request.length)):
                if self.throttle is not None:
                    await self.throttle.take(len(c.data))
                self.served_bytes += len(c.data)
                yield ipb.ImageChunk(offset=c.offset, data=c.data, sha256=c.sha256, prefix=c.prefix)
        except errors.ReplicationError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            return
        finally:
            self.pieces_out -= piece
        yield ipb.ImageChunk(last=True)

    async def Serve(self, request: Any, context: Any) -> AsyncIterator[ipb.ServeRequest]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "a site serves Pull only")
        yield ipb.ServeRequest()

    async def Upload(self, request_iterator: Any, context: Any) -> ipb.UploadDone:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "a site serves Pull only")
        return ipb.UploadDone()

    async def Replicate(self, request_iterator: Any, context: Any) -> AsyncIterator[ipb.CopyOrder]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "a site serves Pull only")
        yield ipb.CopyOrder()


def server(
    service: DirectServer, listen: str, credentials: grpc.ServerCredentials
) -> tuple[grpc.aio.Server, int]:
    """A gRPC server for ``service`` on ``listen`` (mTLS, client certificates required)."""
    srv = grpc.aio.server(options=CHANNEL_OPTIONS)
    ipb_grpc.add_ImageTransferServicer_to_server(service, srv)
    port = srv.add_secure_port(listen, credentials)
    return srv, port


def from_settings(
    settings: AgentSettings,
    store: Holding,
    throttle: Throttle | None,
    swarms: dict[ImageId, PieceFile] | None = None,
) -> grpc.aio.Server | None:
    """The site's direct image server on ``images.direct_listen`` (``None``: not set — the
    site is behind NAT, or does not serve directly); ``SettingsError`` when incomplete."""
    cfg, tls = settings.images, settings.tls
    if not cfg.direct_listen:
        return None
    try:
        key = grant.load_public(Path(cfg.grant_public_key_file).read_bytes())
        pair = (Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes())
        ca = Path(tls.ca_file).read_bytes()
    except (OSError, errors.ReplicationError) as exc:
        raise agent_errors.SettingsError([f"images.direct_listen needs {exc}"]) from exc
    creds = grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=True)
    service = DirectServer(settings.site_id, store, key, throttle=throttle, swarms=swarms)
    return server(service, cfg.direct_listen, creds)[0]
