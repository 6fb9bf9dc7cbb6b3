"""The agent's side of swarming: ask peers for pieces over their direct mTLS addresses.

``GrantedPeer`` is a ``replication.swarm.Peer`` reached at another site's direct address
(``directwire.DirectServer``), presenting the broker's grant for that pair and piece list;
``receive`` runs ``replication.swarm.fetch`` into a ``PieceFile`` in the site's image
directory, registered in ``swarms`` (what this site's ``DirectServer`` serves from) while
it arrives, so the site re-serves each piece it verified. This is the boundary where grpc
errors become ``replication.errors`` (``directwire.translate``).

Invariant: a piece counts only once ``PieceFile.write`` matched it against the manifest,
whoever sent it; the image is committed only by ``PieceFile.finish``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc
from meridian.v1 import image_pb2 as ipb
from meridian.v1 import image_pb2_grpc as ipb_grpc

from replication import errors, pieces, swarm, transfer
from replication.catalog import Image, ImageId
from replication.pieces import Manifest, PieceFile
from replication.throttle import Throttle
from siteagent.directwire import translate


class GrantedPeer:
    """``site``'s pieces at its direct address, under the grant ``token``."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        site: str,
        token: str,
        manifest: Manifest,
        *,
        chunk_size: int = transfer.DEFAULT_CHUNK,
        timeout: float = 60.0,
        download: Throttle | None = None,
    ) -> None:
        self._stub = ipb_grpc.ImageTransferStub(channel)
        self.site, self.token = site, token
        self.digest = manifest.digest()
        self.chunk_size, self.timeout = chunk_size, timeout
        # the destination's download cap, charged per chunk as it arrives: charged per
        # whole piece after it arrived, the wait did not overlap the transfer and one
        # shaped link ran at about half its cap
        self.download = download

    async def have(self, image: ImageId, count: int) -> set[int]:
        request = ipb.HaveRequest(
            image_id=image, source_site=self.site, grant=self.token, pieces=self.digest, count=count
        )
        try:
            reply = await self._stub.Have(request, timeout=min(self.timeout, 5.0))
        except grpc.aio.AioRpcError as exc:
            raise translate(exc) from exc
        return pieces.from_bitmap(reply.bitmap, count)

    async def piece(self, image: ImageId, offset: int, length: int) -> bytes:
        request = ipb.PullRequest(
            image_id=image,
            source_site=self.site,
            offset=offset,
            chunk_size=self.chunk_size,
            grant=self.token,
            length=length,
            pieces=self.digest,
        )
        call = self._stub.Pull(request, timeout=self.timeout)
        parts: list[bytes] = []
        try:
            async for msg in call:
                if msg.last:
                    return b"".join(parts)
                if self.download is not None:
                    await self.download.take(len(msg.data))
                parts.append(msg.data)
            raise errors.PeerGone(f"the piece at {offset} from {self.site} was cut short")
        except grpc.aio.AioRpcError as exc:
            raise translate(exc) from exc
        finally:
            call.cancel()


async def receive(
    root: Path,
    image: Image,
    manifest: Manifest,
    peers: Sequence[swarm.Peer],
    swarms: dict[ImageId, PieceFile],
    *,
    seed: str,
    report: swarm.Report | None = None,
    progress: swarm.Progress | None = None,
    refresh: float = 0.5,
) -> swarm.Outcome:
    """``image`` swarmed into ``root`` (as ``<id>.img`` when whole and verified); the
    verified pieces are served from ``swarms`` meanwhile. A new call resumes from the
    pieces an earlier one verified."""
    file = PieceFile(root, image, manifest)
    await file.open()
    swarms[image.id] = file
    try:
        return await swarm.fetch(
            file, peers, seed=seed, report=report, progress=progress, refresh=refresh
        )
    finally:
        if swarms.get(image.id) is file:
            del swarms[image.id]
