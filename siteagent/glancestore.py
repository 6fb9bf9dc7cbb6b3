"""An openstack site's Glance as the agent's image store (the same seam as the sim's dir).

``GlanceImages`` is a ``replication.transfer.ByteSource`` and ``ByteSink`` plus the audit
calls ``imagewire.ImageAgent`` makes (``holds``, ``listing``, ``digest``, ``remove``,
``expect``, ``adopt``: a swarmed image, verified whole in the staging directory). It sees
only Meridian-marked images: active Glance images whose property
``meridian_image_id`` names a catalog image (an operator marks a source image that way
before registering it; replicas are created with it).

Serving streams ``GET /v2/images/{id}/file`` a chunk at a time, from any offset with an
HTTP ``Range`` request, so a dropped relay resumes where it stopped. Receiving cannot
resume inside Glance: ``PUT /file`` is all or nothing. The bytes are therefore first
staged in a local ``DirBytes`` (each chunk verified, resumable across drops and restarts),
and only the whole, catalog-verified staged file is uploaded; a failed or cut upload is
deleted from Glance and restarted from that staging (up to ``UPLOAD_ATTEMPTS`` times),
not from the peer.

Invariant 8: an image becomes a Meridian image in Glance only after the staged bytes
matched the catalog's size and sha256 (``transfer.verify``), the sha256 and sha512 of the
bytes actually uploaded match it again, and Glance's own ``os_hash_value`` equals the
catalog's; otherwise the Glance image is deleted. Foreign errors (openstacksdk, requests)
become ``replication.errors`` here, at this one boundary.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from replication import catalog, errors, transfer
from replication.catalog import ImageId
from replication.dirstore import DirBytes
from replication.transfer import Chunk
from siteagent.drivers.openstack_support import HashingReader, connect_to

log = logging.getLogger(__name__)

MARK = "meridian_image_id"
"""Glance image property naming the catalog image an image holds."""
SHA256 = "meridian_sha256"
"""Glance image property with the catalog sha256 (also what the driver's images carry)."""
UPLOAD_ATTEMPTS = 3
"""Uploads of one staged image to Glance before the copy is reported failed (temporary)."""

T = TypeVar("T")


class GlanceImages:
    """The Meridian-marked images of one site's Glance, staged through ``staging``."""

    def __init__(
        self,
        cloud: str,
        staging: Path,
        *,
        timeout: float = 60.0,
        connection: Any = None,
    ) -> None:
        self.cloud = cloud
        self.timeout = timeout
        self.staging = DirBytes(staging)
        self._conn: Any = connection
        self._expected: dict[ImageId, catalog.Image] = {}

    # -- the one boundary for foreign errors ---------------------------------------------

    def _admin(self) -> Any:
        if self._conn is None:
            self._conn = connect_to(self.cloud, self.timeout)
        return self._conn

    async def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args), self.timeout)
        except errors.ReplicationError:
            raise
        except TimeoutError as exc:
            raise errors.PeerGone(f"Glance: {what} took longer than {self.timeout:.0f}s") from exc
        except Exception as exc:  # openstacksdk, keystoneauth and requests errors alike
            raise errors.SourceFailed(f"Glance: {what} failed: {exc}") from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- finding images ---------------------------------------------------------------------

    def _marked(self, image: ImageId | None = None, *, active: bool = True) -> list[Any]:
        """Marked images (of ``image`` only, when given; active ones unless ``active`` is
        false), oldest first."""
        query = {"status": "active"} if active else {}
        found = [
            i
            for i in self._admin().image.images(**query)
            if (i.properties or {}).get(MARK) is not None
            and (image is None or (i.properties or {}).get(MARK) == image)
        ]
        return sorted(found, key=lambda i: str(i.created_at or ""))

    def _one(self, image: ImageId) -> Any:
        found = self._marked(image)
        if not found:
            raise errors.UnknownImage(image)
        return found[0]

    async def holds(self, image: ImageId) -> bool:
        return bool(await self._call(f"listing {image}", self._marked, image))

    async def listing(self) -> list[ImageId]:
        """Every catalog image this Glance holds, sorted."""
        found = await self._call("listing images", self._marked)
        return sorted({ImageId(str(i.properties[MARK])) for i in found})

    async def digest(self, image: ImageId) -> tuple[str, int]:
        """(sha256, size) re-computed from the bytes Glance serves (the drift audit)."""
        h = hashlib.sha256()
        size = 0
        async for chunk in self.chunks(image, 0, 1 << 20):
            h.update(chunk.data)
            size += len(chunk.data)
        return h.hexdigest(), size

    async def remove(self, image: ImageId) -> None:
        """Delete every Glance image marked ``image`` (it drifted, or an upload of it was
        cut and left one queued or saving) and any staged bytes."""

        def delete() -> None:
            conn = self._admin()
            for found in self._marked(image, active=False):
                conn.image.delete_image(found, ignore_missing=True)

        await self._call(f"deleting {image}", delete)
        await self.staging.remove(image)

    async def expect(self, image: catalog.Image) -> None:
        """The catalog entry about to be received: names it in Glance, checks its hash."""
        self._expected[image.id] = image

    # -- ByteSource -------------------------------------------------------------------------

    async def chunks(
        self, image: ImageId, offset: int, chunk_size: int, *, digests: bool = True
    ) -> AsyncIterator[Chunk]:
        """Chunks, each with its sha256 unless ``digests`` is false (``transfer.prefixed``)."""

        def open_stream() -> tuple[Any, int]:
            found = self._one(image)
            if offset >= (found.size or 0):
                return None, int(found.size or 0)
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            response = self._admin().image.get(
                f"/images/{found.id}/file", headers=headers, stream=True
            )
            if response.status_code not in (200, 206) or (offset and response.status_code != 206):
                response.close()
                raise errors.SourceFailed(
                    f"Glance answered {response.status_code} for {image} from byte {offset}"
                )
            return response, int(found.size or 0)

        response, _ = await self._call(f"reading {image}", open_stream)
        if response is None:
            return
        pieces = response.iter_content(chunk_size)
        try:
            while True:
                data = await self._call(f"reading {image}", next, pieces, b"")
                if not data:
                    return
                yield await transfer.hashed(offset, data) if digests else Chunk(offset, data, b"")
                offset += len(data)
        finally:
            response.close()

    # -- ByteSink: verified bytes go to local staging, only whole images into Glance --------

    async def verified_offset(self, image: ImageId) -> int:
        return await self.staging.verified_offset(image)

    async def reserve(self, image: ImageId, size: int) -> None:
        await self.staging.reserve(image, size)

    async def write(self, image: ImageId, chunk: Chunk) -> None:
        await self.staging.write(image, chunk)

    async def digests(self, image: ImageId, algo: str) -> tuple[str, str]:
        return await self.staging.digests(image, algo)

    async def discard(self, image: ImageId) -> None:
        await self.staging.discard(image)

    async def commit(self, image: ImageId) -> None:
        """Upload the verified staged image; restart the upload from staging on failure.

        Glance cannot resume a ``PUT /file``: each attempt creates a fresh Glance image
        and sends the whole staged file again; a failed attempt's image is deleted.
        """
        await self.staging.commit(image)  # <id>.img: the whole, catalog-verified bytes
        await self._upload_staged(image)

    async def adopt(self, image: catalog.Image) -> None:
        """A swarmed image: the whole ``<id>.img`` the swarm verified (sha256 and multihash,
        ``pieces.PieceFile.finish``) in the staging directory goes into Glance, checked
        again as it is uploaded and against Glance's ``os_hash_value``."""
        self._expected[image.id] = image
        await self._upload_staged(image.id)

    async def _upload_staged(self, image: ImageId) -> None:
        staged = self.staging.root / f"{image}.img"
        entry = self._expected.get(image)
        try:
            for attempt in range(1, UPLOAD_ATTEMPTS + 1):
                try:
                    await asyncio.to_thread(self._upload, image, entry, staged)
                    return
                except errors.ImageMismatch:
                    raise
                except Exception as exc:
                    if attempt == UPLOAD_ATTEMPTS:
                        raise errors.PeerGone(
                            f"uploading {image} to Glance failed {attempt} times: {exc}",
                            retry_after=5.0,
                        ) from exc
                    log.info("upload of %s to Glance failed (%s): again from staging", image, exc)
        finally:
            staged.unlink(missing_ok=True)
            self._expected.pop(image, None)

    def _upload(self, image: ImageId, entry: catalog.Image | None, staged: Path) -> None:
        conn = self._admin()
        for left in self._marked(image, active=False):  # what a killed agent's upload left
            if left.status != "active":
                conn.image.delete_image(left, ignore_missing=True)
        size = staged.stat().st_size
        body = {
            "name": entry.name if entry is not None else str(image),
            "disk_format": "raw",
            "container_format": "bare",
            "visibility": "shared",
            "tags": ["meridian"],
            MARK: str(image),
        }
        if entry is not None:
            body[SHA256] = entry.sha256
        created = conn.image.post("/images", json=body)
        if created.status_code >= 400:
            raise errors.SinkRejected(f"Glance refused image {image}: {created.text[:300]}")
        glance_id = created.json()["id"]
        try:
            with staged.open("rb") as f:
                reader = HashingReader(f, size)
                done = conn.image.put(
                    f"/images/{glance_id}/file",
                    data=reader,
                    headers={"Content-Type": "application/octet-stream"},
                )
            if done.status_code >= 400:
                raise errors.SinkRejected(
                    f"Glance refused the bytes of {image}: {done.status_code}"
                )
            held = conn.image.get_image(glance_id)
            problem = _mismatch(entry, reader, held, size)
            if problem:
                raise errors.ImageMismatch(image, *problem)
        except BaseException:
            conn.image.delete_image(glance_id, ignore_missing=True)
            raise
        log.info("image %s is Glance image %s (%s)", image, glance_id, held.status)


def _mismatch(
    entry: catalog.Image | None, reader: HashingReader, held: Any, size: int
) -> tuple[str, str] | None:
    """(expected, found) when the uploaded bytes or Glance's view of them are not the
    catalog's; None when all agree."""
    if held.status != "active" or int(held.size or -1) != size:
        return f"an active image of {size} bytes", f"{held.status} with {held.size} bytes"
    if entry is None:
        return None
    if reader.sha256.hexdigest() != entry.sha256:
        return f"sha256 {entry.sha256}", f"sha256 {reader.sha256.hexdigest()} uploaded"
    algo, want = entry.os_hash_algo or "sha512", entry.os_hash_value
    if held.hash_algo == algo == "sha512" and held.hash_value != reader.sha512.hexdigest():
        return f"Glance {algo} of the bytes sent", f"{held.hash_value}"
    if want and held.hash_algo == algo and held.hash_value != want:
        return f"{algo} {want}", f"Glance's os_hash_value {held.hash_value}"
    return None
