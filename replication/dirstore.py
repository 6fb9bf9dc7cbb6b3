"""A directory of image files that is both a ``ByteSource`` and a ``ByteSink``.

The site agent's byte store when it has no Glance (the sim driver) and the bounded disk
cache in front of one: ``<dir>/<id>.img`` is a committed image, ``<dir>/<id>.part`` the
verified prefix of one being received. Memory stays bounded whatever the image size: a
chunk at a time is read or appended, and the running digests of a partial file are
rebuilt from disk (once) when a copy resumes after a restart.

Invariants: a ``.img`` file appears only through ``commit`` (after the whole-image check
in ``transfer.copy``) — or is put there by the site itself, as Glance would hold it; only
per-chunk-verified bytes are appended to a ``.part`` file (each byte hashed once on the
receiving path: ``replication.fold.Received``); an image id that is not a plain
name (``/``, ``..``) is refused before it touches a path.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from replication import errors
from replication.catalog import ImageId
from replication.fold import Received
from replication.transfer import Chunk

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_READ = 1 << 20


def file_digest(path: Path, algo: str = "sha256") -> tuple[str, int]:
    """(hex digest, size) of a file, read a chunk at a time.

    Raises ``ImageChanging`` when the file was written to while it was read (its size or
    modification time moved, or more or fewer bytes were read than it had): a site
    putting an image in place is not a source whose bytes are wrong."""
    h = hashlib.new(algo)
    size = 0
    with path.open("rb") as f:
        before = os.fstat(f.fileno())
        while block := f.read(_READ):
            h.update(block)
            size += len(block)
        after = os.fstat(f.fileno())
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or (
        size != after.st_size
    ):
        raise errors.ImageChanging(path.stem)
    return h.hexdigest(), size


class DirBytes:
    """Committed and partial images under one directory."""

    def __init__(self, root: Path, *, capacity: int | None = None) -> None:
        self.root = root
        self.capacity = capacity
        root.mkdir(parents=True, exist_ok=True)
        self._partial: dict[ImageId, Received] = {}

    def _path(self, image: ImageId, suffix: str) -> Path:
        if not _NAME.fullmatch(image):
            raise errors.InvalidImage("image", f"{image!r} is not a plain image id")
        return self.root / f"{image}{suffix}"

    def has(self, image: ImageId) -> bool:
        return self._path(image, ".img").exists()

    def held(self) -> list[ImageId]:
        """Every committed image, sorted."""
        return sorted(ImageId(p.name[: -len(".img")]) for p in self.root.glob("*.img"))

    async def digest(self, image: ImageId) -> tuple[str, int]:
        """(sha256, size) re-computed from the committed bytes (the drift audit)."""
        path = self._path(image, ".img")
        try:
            return await asyncio.to_thread(file_digest, path)
        except FileNotFoundError as exc:
            raise errors.UnknownImage(image) from exc

    async def remove(self, image: ImageId) -> None:
        """Drop a committed copy (it drifted from the catalog) and any partial one."""
        self._path(image, ".img").unlink(missing_ok=True)
        await self.discard(image)

    # ByteSource
    async def chunks(
        self, image: ImageId, offset: int, chunk_size: int, *, digests: bool = True
    ) -> AsyncIterator[Chunk]:
        """Chunks of a committed image, each with its sha256 unless ``digests`` is false
        (a direct source sending prefix digests: ``transfer.prefixed``)."""
        path = self._path(image, ".img")
        try:
            f = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError as exc:
            raise errors.UnknownImage(image) from exc
        except OSError as exc:
            raise errors.SourceFailed(f"cannot read {image}: {exc.strerror}") from exc

        def read(at: int) -> Chunk | None:  # read and hash on the worker thread
            data = f.read(chunk_size)
            if not data:
                return None
            return Chunk.of(at, data) if digests else Chunk(at, data, b"")

        try:
            f.seek(offset)
            while chunk := await asyncio.to_thread(read, offset):
                yield chunk
                offset += len(chunk.data)
        finally:
            f.close()

    # ByteSink
    async def _load(self, image: ImageId) -> Received:
        p = self._partial.get(image)
        if p is not None:
            return p
        p = Received("sha512")
        path = self._path(image, ".part")
        if path.exists():  # a copy interrupted by a restart: re-hash what it verified

            def rehash() -> None:
                with path.open("rb") as f:
                    while block := f.read(_READ):
                        p.rebuild(block)

            await asyncio.to_thread(rehash)
        self._partial[image] = p
        return p

    async def verified_offset(self, image: ImageId) -> int:
        return (await self._load(image)).size

    async def reserve(self, image: ImageId, size: int) -> None:
        free = shutil.disk_usage(self.root).free
        if self.capacity is not None:
            used = sum(p.stat().st_size for p in self.root.iterdir() if p.is_file())
            free = min(free, self.capacity - used)
        if size > free:
            raise errors.CacheFull(size, max(free, 0))
        await self._load(image)

    async def write(self, image: ImageId, chunk: Chunk) -> None:
        p = await self._load(image)
        if chunk.offset != p.size:
            raise errors.PeerGone(f"chunk at {chunk.offset}, verified up to {p.size}")
        path = self._path(image, ".part")

        def append() -> object:  # check and append on the worker thread
            checked = p.check(chunk)
            if checked is not None:
                with path.open("ab") as f:
                    f.write(chunk.data)
            return checked

        await p.ready(chunk)
        try:
            checked = await asyncio.to_thread(append)
        except OSError as exc:
            raise errors.SinkRejected(f"cannot write {image}: {exc.strerror}") from exc
        if checked is None:
            raise errors.ChunkCorrupt(chunk.offset)
        await p.keep(chunk, checked)  # the whole-image digests, folded behind

    async def digests(self, image: ImageId, algo: str) -> tuple[str, str]:
        return await (await self._load(image)).hexdigests(algo)

    async def commit(self, image: ImageId) -> None:
        self._path(image, ".part").touch()  # an empty image has no appended chunk
        os.replace(self._path(image, ".part"), self._path(image, ".img"))
        self._partial.pop(image, None)

    async def discard(self, image: ImageId) -> None:
        self._partial.pop(image, None)
        self._path(image, ".part").unlink(missing_ok=True)
