"""Each received byte hashed once on the receiving path (``replication.fold``): prefix
digests checked in the pass that computes the whole-image sha256, chunk digests checked
with the whole-image digests folded behind; nothing corrupt is kept, a resumed or mixed
copy still ends with the digests of exactly the bytes kept, and the whole-image check
still refuses bytes that check out chunk by chunk (or piece by piece) but are not the
catalog's image."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from replication import catalog, errors, fold, pieces, transfer
from replication.catalog import ImageId, SiteId
from replication.dirstore import DirBytes
from replication.fold import Fold, Received
from replication.store import MemoryBytes
from replication.transfer import Chunk

DATA = os.urandom(300_000 + 17)
IID = ImageId("img")


def image(data: bytes = DATA) -> catalog.Image:
    return catalog.Image(
        IID,
        "n",
        len(data),
        hashlib.sha256(data).hexdigest(),
        SiteId("src"),
        os_hash_value=hashlib.sha512(data).hexdigest(),
    )


def held(sink: MemoryBytes | DirBytes) -> bytes:
    return sink.get(IID) if isinstance(sink, MemoryBytes) else (sink.root / "img.img").read_bytes()


class Direct:
    """A direct source: ``data`` read without digests from byte 0, sent with prefix
    digests from the offset asked (``transfer.prefixed``); ``flip`` corrupts the chunk at
    that offset once, after its digest was taken; ``starts`` records the offsets asked."""

    def __init__(self, data: bytes = DATA, flip: int = -1) -> None:
        self.store = MemoryBytes()
        self.store.put(IID, data)
        self.flip, self.starts = flip, []  # type: int, list[int]

    async def chunks(self, image: ImageId, offset: int, chunk_size: int) -> AsyncIterator[Chunk]:
        self.starts.append(offset)
        whole = self.store.chunks(image, 0, chunk_size, digests=False)
        async for c in transfer.prefixed(whole, offset):
            if c.offset == self.flip:
                self.flip = -1
                c = Chunk(c.offset, bytes([c.data[0] ^ 1]) + c.data[1:], c.sha256, prefix=True)
            yield c


@pytest.mark.parametrize("chunk", [1000, 65536, 1 << 20])
async def test_prefix_digests_check_every_chunk_and_give_the_whole_image_digests(
    chunk: int, tmp_path: Path
) -> None:
    for sink in (MemoryBytes(), DirBytes(tmp_path / f"d{chunk}")):
        await transfer.copy(image(), Direct(), sink, chunk_size=chunk)
        assert held(sink) == DATA


async def test_prefixed_from_inside_a_chunk_carries_the_digest_of_the_prefix() -> None:
    src = MemoryBytes()
    src.put(IID, DATA)
    got = [c async for c in transfer.prefixed(src.chunks(IID, 0, 1000, digests=False), 2500)]
    assert got[0].offset == 2500 and len(got[0].data) == 500 and got[0].prefix
    assert got[0].sha256 == hashlib.sha256(DATA[:3000]).digest()
    assert b"".join(c.data for c in got) == DATA[2500:]
    assert got[-1].sha256 == hashlib.sha256(DATA).digest()


async def test_a_corrupt_prefix_chunk_is_refused_and_the_copy_resumes_at_the_verified_bytes(
    tmp_path: Path,
) -> None:
    for sink in (MemoryBytes(), DirBytes(tmp_path)):
        src = Direct(flip=5000)
        out = await transfer.copy(image(), src, sink, chunk_size=1000)
        assert out.retries == 1 and src.starts == [0, 5000]
        assert held(sink) == DATA


async def test_self_consistent_bytes_that_are_not_the_catalogs_are_never_activated(
    tmp_path: Path,
) -> None:
    """Every chunk checks out against the sender's prefix digests: only the whole-image
    comparison with the catalog stands between these bytes and activation."""
    other = DATA[:-1] + bytes([DATA[-1] ^ 1])
    for sink in (MemoryBytes(), DirBytes(tmp_path)):
        with pytest.raises(errors.ImageMismatch):
            await transfer.copy(image(), Direct(other), sink, chunk_size=4096)
        assert await sink.verified_offset(IID) == 0
    assert not (tmp_path / "img.img").exists() and not (tmp_path / "img.part").exists()


async def test_a_copy_that_changes_path_midway_keeps_one_running_digest(tmp_path: Path) -> None:
    """Relay chunks (own digests, whole-image sha256 folded behind), then direct ones
    (prefix digests checked against that running sha256), then the relay again."""
    relay = MemoryBytes()
    relay.put(IID, DATA)
    for sink in (MemoryBytes(), DirBytes(tmp_path)):
        received = 0
        for src in (relay, Direct(), relay):
            async for c in src.chunks(IID, received, 7000):
                await sink.write(IID, c)
                received += len(c.data)
                if received >= len(DATA) // 3 * (1 + (src is not relay)):
                    break
        async for c in relay.chunks(IID, received, 7000):
            await sink.write(IID, c)
        sha, multi = await sink.digests(IID, "sha512")
        assert sha == hashlib.sha256(DATA).hexdigest()
        assert multi == hashlib.sha512(DATA).hexdigest()


async def test_a_chunk_with_its_own_digest_is_checked_and_only_kept_bytes_are_folded() -> None:
    r = Received("sha512")
    await r.absorb(Chunk.of(0, b"abc"))
    with pytest.raises(errors.ChunkCorrupt):
        await r.absorb(Chunk(3, b"def", hashlib.sha256(b"xyz").digest()))
    with pytest.raises(errors.ChunkCorrupt):  # a prefix digest of other bytes
        await r.absorb(Chunk(3, b"def", hashlib.sha256(b"abcxyz").digest(), prefix=True))
    await r.absorb(Chunk(3, b"def", hashlib.sha256(b"abcdef").digest(), prefix=True))
    assert r.size == 6
    assert await r.hexdigests("sha512") == (
        hashlib.sha256(b"abcdef").hexdigest(),
        hashlib.sha512(b"abcdef").hexdigest(),
    )
    assert (await r.hexdigests("sha256"))[1] == hashlib.sha256(b"abcdef").hexdigest()


async def test_the_fold_keeps_order_bounds_its_queue_and_its_thread_ends_when_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fold, "IDLE_S", 0.05)
    f = Fold("sha256", depth=2)
    blocks = [os.urandom(5000) for _ in range(50)]
    for b in blocks:
        await f.feed(b)
        assert f._queue.qsize() <= 2
    await f.drained()
    assert f.hashes["sha256"].hexdigest() == hashlib.sha256(b"".join(blocks)).hexdigest()
    thread = f._thread
    assert thread is not None
    thread.join(2.0)
    assert not thread.is_alive() and f._thread is None
    await f.feed(b"more")  # a new thread for the next bytes
    await f.drained()
    assert f.hashes["sha256"].hexdigest() == hashlib.sha256(b"".join(blocks) + b"more").hexdigest()


async def test_pieces_that_match_their_list_but_not_the_catalog_are_never_activated(
    tmp_path: Path,
) -> None:
    """A piece list of other bytes: every piece checks out against it, only the
    whole-image check refuses the image (nothing activated, nothing kept)."""
    other = DATA[:-1] + bytes([DATA[-1] ^ 1])
    manifest = pieces.manifest_of(other, 65536)
    file = pieces.PieceFile(tmp_path, image(), manifest)
    await file.open()
    for i in range(len(manifest)):
        at, n = manifest.span(i)
        await file.write(i, other[at : at + n])
    with pytest.raises(errors.ImageMismatch):
        await file.finish()
    assert not (tmp_path / "img.img").exists() and not (tmp_path / "img.swarm").exists()


async def test_pieces_in_any_order_and_across_a_restart_are_folded_once_in_order(
    tmp_path: Path,
) -> None:
    """The whole-image digests (sha256 and the multihash) follow the verified prefix as
    pieces land in any order; a restarted file folds the pieces it kept, read back."""
    manifest = pieces.manifest_of(DATA, 65536)
    order = [3, 0, 4, 1]  # then a restart, then the rest, last to first

    def piece(i: int) -> bytes:
        at, n = manifest.span(i)
        return DATA[at : at + n]

    first = pieces.PieceFile(tmp_path, image(), manifest)
    await first.open()
    for i in order:
        await first.write(i, piece(i))
    with pytest.raises(errors.ChunkCorrupt):
        await first.write(2, piece(2)[::-1])
    second = pieces.PieceFile(tmp_path, image(), manifest)  # the agent restarted
    await second.open()
    assert second.held == set(order)
    for i in sorted(set(range(len(manifest))) - set(order), reverse=True):
        await second.write(i, piece(i))
    await second.finish()
    assert (tmp_path / "img.img").read_bytes() == DATA


async def test_a_reader_that_fails_is_recorded_and_the_fold_goes_on() -> None:
    f = Fold("sha256")

    def gone() -> bytes:
        raise FileNotFoundError("img.swarm")

    await f.feed(b"a")
    await f.feed(gone)
    await f.feed(lambda: b"b")
    await f.drained()
    assert "cannot read" in f.failed
    assert f.hashes["sha256"].hexdigest() == hashlib.sha256(b"ab").hexdigest()
