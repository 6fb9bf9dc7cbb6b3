"""Chunked, resumable, verified copy of one image from a ``ByteSource`` to a ``ByteSink``.

Every chunk travels with its own sha256; the sink checks it before writing and refuses a
corrupt chunk (``ChunkCorrupt``), after which the copy resumes from the sink's last
verified offset. Hashing runs on worker threads (``hashed``, ``prefixed``: hashlib
releases the GIL), and ``copy`` writes chunk N while the wire receives chunk N+1, so the
event loop only moves bytes. A direct source sends **prefix digests** (``prefixed``: each
chunk's sha256 is of the image from byte 0 to the chunk's end), so the sink's one pass
over the bytes both checks each chunk and computes the whole-image sha256
(``replication.fold.Received``). When all bytes are in, the sink's whole-image sha256 (and
Glance's multihash where the catalog has one) is compared with the catalog; only a match
is committed. Invariant 8: ``ByteSink.commit`` is called only after that match, and a
mismatch discards the bytes.

The byte stores and the wire sit behind the Protocols below; ``Channel`` is the seam a
test uses to flip bits in transit.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from replication import errors
from replication.catalog import Image, ImageId

DEFAULT_CHUNK = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Chunk:
    """``data`` starting at ``offset``; ``sha256`` is the sender's digest of ``data`` — or,
    with ``prefix``, of the image's bytes ``[0, offset + len(data))``."""

    offset: int
    data: bytes
    sha256: bytes
    prefix: bool = False

    @classmethod
    def of(cls, offset: int, data: bytes) -> Chunk:
        return cls(offset, data, hashlib.sha256(data).digest())

    def intact(self) -> bool:
        return hashlib.sha256(self.data).digest() == self.sha256


async def hashed(offset: int, data: bytes) -> Chunk:
    """``Chunk.of`` on a worker thread: the loop sends the previous chunk meanwhile."""
    return await asyncio.to_thread(Chunk.of, offset, data)


async def prefixed(chunks: AsyncIterator[Chunk], offset: int) -> AsyncIterator[Chunk]:
    """``chunks`` of an image read from byte 0 (their own sha256 unused), as chunks from
    ``offset`` carrying prefix digests: the running sha256 of everything read, taken on a
    worker thread (one pass over the bytes, the bytes before ``offset`` included)."""
    running = hashlib.sha256()

    def step(data: bytes) -> bytes:
        running.update(data)
        return running.copy().digest()

    async for c in chunks:
        digest = await asyncio.to_thread(step, c.data)
        if c.offset + len(c.data) <= offset:
            continue
        cut = max(0, offset - c.offset)
        yield Chunk(c.offset + cut, c.data[cut:] if cut else c.data, digest, prefix=True)


async def prefetch(items: AsyncIterator[T]) -> AsyncIterator[T]:
    """``items`` with the next one already being produced (read, hashed) while the caller
    handles this one: a one-deep pipeline."""
    nxt: asyncio.Task[T] | None = asyncio.ensure_future(anext(items))
    try:
        while nxt is not None:
            try:
                item = await nxt
            except StopAsyncIteration:
                return
            nxt = asyncio.ensure_future(anext(items))
            yield item
    finally:
        if nxt is not None and not nxt.done():
            nxt.cancel()
            await asyncio.gather(nxt, return_exceptions=True)
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


class ByteSource(Protocol):
    """Where an image's bytes are read from (a site's Glance, the sim store, a relay)."""

    def chunks(self, image: ImageId, offset: int, chunk_size: int) -> AsyncIterator[Chunk]:
        """Chunks from ``offset`` to the end of the image, in order, each with its sha256."""
        ...


class ByteSink(Protocol):
    """Where an image's bytes go; it keeps what it verified across reconnects."""

    async def verified_offset(self, image: ImageId) -> int:
        """Bytes already received and verified (where a resumed copy starts)."""
        ...

    async def reserve(self, image: ImageId, size: int) -> None:
        """Make room for ``size`` bytes or raise ``CacheFull`` / ``SinkRejected``."""
        ...

    async def write(self, image: ImageId, chunk: Chunk) -> None:
        """Append a chunk at the verified offset; raise ``ChunkCorrupt`` if not intact."""
        ...

    async def digests(self, image: ImageId, algo: str) -> tuple[str, str]:
        """(sha256, ``algo``) hex digests of everything received."""
        ...

    async def commit(self, image: ImageId) -> None:
        """Make the verified image usable (upload to Glance, mark active)."""
        ...

    async def discard(self, image: ImageId) -> None:
        """Drop the received bytes: they did not match the catalog."""
        ...


Channel = Callable[[Chunk], Chunk]
Progress = Callable[[int, float], Awaitable[None]]


def passthrough(chunk: Chunk) -> Chunk:
    return chunk


@dataclass(frozen=True, slots=True)
class Outcome:
    image: ImageId
    size: int
    retries: int
    seconds: float


async def verify(image: Image, sink: ByteSink) -> None:
    """Compare everything the sink holds with the catalog, or discard it."""
    sha, multi = await sink.digests(image.id, image.os_hash_algo)
    if sha != image.sha256:
        await sink.discard(image.id)
        raise errors.ImageMismatch(image.id, f"sha256 {image.sha256}", f"sha256 {sha}")
    if image.os_hash_value and multi != image.os_hash_value:
        await sink.discard(image.id)
        raise errors.ImageMismatch(
            image.id,
            f"{image.os_hash_algo} {image.os_hash_value}",
            f"{image.os_hash_algo} {multi}",
        )


async def copy(
    image: Image,
    source: ByteSource,
    sink: ByteSink,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    channel: Channel = passthrough,
    progress: Progress | None = None,
    max_retries: int = 5,
) -> Outcome:
    """Copy, resuming from the sink's verified offset after a corrupt chunk or drop."""
    started = time.monotonic()
    retries = 0
    offset = await sink.verified_offset(image.id)
    if offset == 0:
        await sink.reserve(image.id, image.size)
    while offset < image.size:
        try:
            offset = await _stream(image, source, sink, offset, chunk_size, channel, progress)
        except errors.Temporary as exc:
            retries += 1
            if retries > max_retries:
                raise
            await asyncio.sleep(exc.retry_after)
            offset = await sink.verified_offset(image.id)
            continue
        if offset != image.size:
            raise errors.ImageMismatch(image.id, f"{image.size} bytes", f"{offset} bytes")
    await verify(image, sink)
    await sink.commit(image.id)
    return Outcome(image.id, image.size, retries, time.monotonic() - started)


async def _stream(
    image: Image,
    source: ByteSource,
    sink: ByteSink,
    offset: int,
    chunk_size: int,
    channel: Channel,
    progress: Progress | None,
) -> int:
    """Chunks from ``offset`` into the sink; chunk N is written (hashed on a thread) while
    chunk N+1 arrives. Returns the offset after the last written chunk."""
    window_t, window_b = time.monotonic(), offset
    written, end = offset, offset
    pending: asyncio.Task[None] | None = None
    try:
        async for sent in source.chunks(image.id, offset, chunk_size):
            chunk = channel(sent)
            if chunk.offset != end:
                raise errors.PeerGone(f"chunk at {chunk.offset}, expected {end}")
            if end + len(chunk.data) > image.size:
                raise errors.ImageMismatch(image.id, f"{image.size} bytes", "more bytes")
            if pending is not None:
                await pending
                written = end
            pending = asyncio.ensure_future(sink.write(image.id, chunk))
            end += len(chunk.data)
            now = time.monotonic()
            if progress is not None and now - window_t >= 0.25:
                await progress(written, (written - window_b) / max(now - window_t, 1e-9))
                window_t, window_b = now, written
        if pending is not None:
            await pending
            written, pending = end, None
    finally:
        if pending is not None:  # the source failed: let the chunk in hand land (or not)
            await asyncio.gather(pending, return_exceptions=True)
    if progress is not None and written > window_b:
        now = time.monotonic()
        await progress(written, (written - window_b) / max(now - window_t, 1e-9))
    return written
