"""An in-memory byte store that is both a ``ByteSource`` and a ``ByteSink``.

Used by the sim driver and the tests. It keeps, per image, the verified prefix and the
running digests of it (``replication.fold.Received``), so a resumed copy never re-hashes
what it already verified; a capacity makes ``CacheFull`` reachable and ``reject`` makes
a sink refuse uploads.
A store that is still receiving an image serves its verified prefix to others and
follows it as it grows (relay fan-out); if its copy is discarded, readers get
``SourceFailed``. Invariant: ``has`` (a usable image) is true only after ``commit``,
and only per-chunk-verified bytes are ever relayed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from replication import errors, transfer
from replication.catalog import ImageId
from replication.fold import Received
from replication.transfer import Chunk


@dataclass
class _Partial:
    data: bytearray = field(default_factory=bytearray)
    received: Received = field(default_factory=lambda: Received("sha512"))
    size: int = -1  # expected size, from reserve


class MemoryBytes:
    """Committed images plus partial ones being received."""

    def __init__(self, *, capacity: int | None = None, reject: str = "") -> None:
        self.capacity = capacity
        self.reject = reject
        self._images: dict[ImageId, bytes] = {}
        self._partial: dict[ImageId, _Partial] = {}
        self._grew: asyncio.Condition | None = None
        self._followers = 0

    def _cond(self) -> asyncio.Condition:
        if self._grew is None:
            self._grew = asyncio.Condition()
        return self._grew

    async def _notify(self) -> None:
        if not self._followers:
            return
        cond = self._cond()
        async with cond:
            cond.notify_all()

    def put(self, image: ImageId, data: bytes) -> None:
        self._images[image] = bytes(data)

    def has(self, image: ImageId) -> bool:
        return image in self._images

    def get(self, image: ImageId) -> bytes:
        return self._images[image]

    def images(self) -> dict[ImageId, bytes]:
        return dict(self._images)

    def used(self) -> int:
        held = sum(len(b) for b in self._images.values())
        return held + sum(len(p.data) for p in self._partial.values())

    def partial_size(self, image: ImageId) -> int:
        p = self._partial.get(image)
        return 0 if p is None else len(p.data)

    # ByteSource
    async def chunks(
        self, image: ImageId, offset: int, chunk_size: int, *, digests: bool = True
    ) -> AsyncIterator[Chunk]:
        """Chunks, each with its sha256 unless ``digests`` is false (``transfer.prefixed``)."""
        if image not in self._images and image in self._partial:
            async for c in self._follow(image, offset, chunk_size, digests):
                offset = c.offset + len(c.data)
                yield c
            if image not in self._images:
                return  # every byte was relayed; the image is being verified
        if image not in self._images:
            raise errors.UnknownImage(image)
        data = self._images[image]
        view = memoryview(data)
        for at in range(offset, len(data), chunk_size):
            block = bytes(view[at : at + chunk_size])
            yield await transfer.hashed(at, block) if digests else Chunk(at, block, b"")

    async def _follow(
        self, image: ImageId, offset: int, chunk_size: int, digests: bool
    ) -> AsyncIterator[Chunk]:
        """The verified prefix of an image still arriving, until it is committed."""
        cond = self._cond()
        while True:
            p = self._partial.get(image)
            if p is None:
                if image in self._images:
                    return  # committed: the caller serves the rest from the image
                raise errors.SourceFailed(f"the relay's copy of {image} was discarded")
            if offset < len(p.data):
                end = min(offset + chunk_size, len(p.data))
                block = bytes(p.data[offset:end])
                yield await transfer.hashed(offset, block) if digests else Chunk(offset, block, b"")
                offset = end
                continue
            if 0 <= p.size <= offset:
                return
            async with cond:
                self._followers += 1
                try:
                    await cond.wait()
                finally:
                    self._followers -= 1

    # ByteSink
    async def verified_offset(self, image: ImageId) -> int:
        if image in self._images:
            return len(self._images[image])
        return self.partial_size(image)

    async def reserve(self, image: ImageId, size: int) -> None:
        if self.reject:
            raise errors.SinkRejected(self.reject)
        if self.capacity is not None:
            free = self.capacity - self.used()
            if size > free:
                raise errors.CacheFull(size, max(free, 0))
        self._partial.setdefault(image, _Partial()).size = size

    async def write(self, image: ImageId, chunk: Chunk) -> None:
        p = self._partial.setdefault(image, _Partial())
        if chunk.offset != len(p.data):
            raise errors.PeerGone(f"chunk at {chunk.offset}, verified up to {len(p.data)}")
        await p.received.absorb(chunk)
        if self._partial.get(image) is not p:
            raise errors.PeerGone(f"the copy of {image} was discarded meanwhile")
        p.data += chunk.data
        await self._notify()

    async def digests(self, image: ImageId, algo: str) -> tuple[str, str]:
        p = self._partial.get(image)
        if p is None:
            raise errors.UnknownImage(image)
        return await p.received.hexdigests(algo)

    async def commit(self, image: ImageId) -> None:
        p = self._partial.pop(image)
        self._images[image] = bytes(p.data)
        await self._notify()

    async def discard(self, image: ImageId) -> None:
        self._partial.pop(image, None)
        await self._notify()
