"""Chunked verified copy between in-memory stores: resume, corruption, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from replication import catalog, errors, transfer
from replication.catalog import ImageId, SiteId
from replication.store import MemoryBytes
from replication.transfer import Chunk

DATA = os.urandom(100_000)
IID = ImageId("img")


def image(data: bytes = DATA, **over: object) -> catalog.Image:
    fields: dict[str, object] = {
        "id": IID,
        "name": "n",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "os_hash_value": hashlib.sha512(data).hexdigest(),
        "source_site": SiteId("src"),
    }
    fields.update(over)
    return catalog.Image(**fields)  # type: ignore[arg-type]


def source(data: bytes = DATA) -> MemoryBytes:
    m = MemoryBytes()
    m.put(IID, data)
    return m


@pytest.mark.parametrize("chunk", [7, 999, 4096, 100_000, 1 << 20])
async def test_copy_verifies_and_commits(chunk: int) -> None:
    dst = MemoryBytes()
    seen: list[int] = []

    async def progress(offset: int, rate: float) -> None:
        seen.append(offset)

    out = await transfer.copy(image(), source(), dst, chunk_size=chunk, progress=progress)
    assert dst.get(IID) == DATA and out.retries == 0
    assert seen[-1] == len(DATA)


async def test_empty_image() -> None:
    dst = MemoryBytes()
    await transfer.copy(image(b""), source(b""), dst)
    assert dst.get(IID) == b""


class FlipOnce:
    """Flips one bit in the chunks at the given offsets, once each."""

    def __init__(self, *offsets: int) -> None:
        self.pending = set(offsets)
        self.flipped: list[int] = []

    def __call__(self, c: Chunk) -> Chunk:
        if c.offset in self.pending:
            self.pending.discard(c.offset)
            self.flipped.append(c.offset)
            bad = bytearray(c.data)
            bad[len(bad) // 2] ^= 0x10
            return Chunk(c.offset, bytes(bad), c.sha256)
        return c


async def test_corrupt_chunks_are_retried_from_last_good_offset() -> None:
    dst = MemoryBytes()
    flips = FlipOnce(0, 40_960, 98_304)
    out = await transfer.copy(image(), source(), dst, chunk_size=4096, channel=flips)
    assert flips.flipped == [0, 40_960, 98_304]
    assert out.retries == 3
    assert dst.get(IID) == DATA


async def test_persistent_corruption_is_never_activated() -> None:
    dst = MemoryBytes()

    def always(c: Chunk) -> Chunk:
        return Chunk(c.offset, b"\0" * len(c.data), c.sha256)

    with pytest.raises(errors.ChunkCorrupt):
        await transfer.copy(image(), source(), dst, chunk_size=4096, channel=always)
    assert not dst.has(IID)


class Dropping:
    """A source that dies after ``n`` chunks the first time it is read."""

    def __init__(self, inner: MemoryBytes, n: int) -> None:
        self.inner, self.n, self.starts = inner, n, []  # type: list[int]

    async def chunks(self, image: ImageId, offset: int, chunk_size: int) -> AsyncIterator[Chunk]:
        self.starts.append(offset)
        sent = 0
        async for c in self.inner.chunks(image, offset, chunk_size):
            if len(self.starts) == 1 and sent == self.n:
                raise errors.PeerGone("agent killed")
            sent += 1
            yield c


async def test_resume_after_drop_starts_at_verified_offset() -> None:
    dst = MemoryBytes()
    src = Dropping(source(), 5)
    out = await transfer.copy(image(), src, dst, chunk_size=1000)
    assert src.starts == [0, 5000]
    assert out.retries == 1 and dst.get(IID) == DATA


async def test_new_copy_resumes_a_partial_one() -> None:
    dst = MemoryBytes()
    with pytest.raises(errors.PeerGone):
        await transfer.copy(image(), Dropping(source(), 3), dst, chunk_size=1000, max_retries=0)
    assert dst.partial_size(IID) == 3000
    src = Dropping(source(), 10**9)
    await transfer.copy(image(), src, dst, chunk_size=1000)
    assert src.starts == [3000] and dst.get(IID) == DATA


@pytest.mark.parametrize(
    "wrong",
    [
        {"sha256": hashlib.sha256(b"other").hexdigest()},
        {"os_hash_value": hashlib.sha512(b"other").hexdigest()},
    ],
)
async def test_source_not_matching_catalog_is_discarded(wrong: dict[str, object]) -> None:
    dst = MemoryBytes()
    with pytest.raises(errors.ImageMismatch):
        await transfer.copy(image(**wrong), source(), dst, chunk_size=8192)
    assert not dst.has(IID) and dst.partial_size(IID) == 0


async def test_source_longer_than_catalog() -> None:
    with pytest.raises(errors.ImageMismatch):
        await transfer.copy(image(size=10), source(), MemoryBytes(), chunk_size=8192)


async def test_source_shorter_than_catalog() -> None:
    with pytest.raises(errors.ImageMismatch):
        await transfer.copy(image(size=len(DATA) + 1), source(), MemoryBytes())


async def test_full_cache_and_rejecting_sink() -> None:
    with pytest.raises(errors.CacheFull) as full:
        await transfer.copy(image(), source(), MemoryBytes(capacity=10))
    assert full.value.needed == len(DATA)
    with pytest.raises(errors.SinkRejected):
        await transfer.copy(image(), source(), MemoryBytes(reject="quota"))


async def test_unknown_image_at_source() -> None:
    with pytest.raises(errors.UnknownImage):
        await transfer.copy(image(), MemoryBytes(), MemoryBytes())


class DropsAfter:
    """Yields ``n`` chunks of the image, then drops (a peer gone mid-stream)."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    async def chunks(self, image: ImageId, offset: int, chunk_size: int) -> AsyncIterator[Chunk]:
        self.calls += 1
        sent = 0
        async for c in source().chunks(image, offset, chunk_size):
            if self.calls == 1 and sent == self.n:
                raise errors.PeerGone("dropped")
            sent += 1
            yield c


async def test_a_drop_lets_the_chunk_in_hand_land_then_resumes_there() -> None:
    dst = MemoryBytes()
    src = DropsAfter(3)
    out = await transfer.copy(image(), src, dst, chunk_size=1000)
    assert dst.get(IID) == DATA and out.retries == 1 and src.calls == 2


async def test_prefetch_reads_one_ahead_and_closes_the_source() -> None:
    produced: list[int] = []
    closed: list[bool] = []

    async def items() -> AsyncIterator[int]:
        try:
            for i in range(10):
                produced.append(i)
                yield i
        finally:
            closed.append(True)

    got = []
    async with contextlib.aclosing(transfer.prefetch(items())) as ahead:
        async for i in ahead:
            got.append(i)
            await asyncio.sleep(0)  # the next one is being produced meanwhile
            if i == 2:
                break
    assert got == [0, 1, 2] and produced == [0, 1, 2, 3] and closed == [True]
