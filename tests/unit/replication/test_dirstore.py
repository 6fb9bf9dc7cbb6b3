"""The directory byte store: verified copies into files, resume after a restart, the
audit digest, and the refusals (corrupt chunk, bad id, full cache)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from replication import catalog, errors, transfer
from replication.catalog import ImageId, SiteId
from replication.dirstore import DirBytes
from replication.store import MemoryBytes

DATA = os.urandom(300_000 + 17)
IMG = catalog.Image(
    id=ImageId("img-1"),
    name="cirros",
    size=len(DATA),
    sha256=hashlib.sha256(DATA).hexdigest(),
    os_hash_value=hashlib.sha512(DATA).hexdigest(),
    source_site=SiteId("src"),
)


def files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def source() -> MemoryBytes:
    m = MemoryBytes()
    m.put(IMG.id, DATA)
    return m


async def test_copy_commits_a_verified_file_and_serves_it(tmp_path: Path) -> None:
    sink = DirBytes(tmp_path)
    await transfer.copy(IMG, source(), sink, chunk_size=64 * 1024)
    assert (tmp_path / "img-1.img").read_bytes() == DATA
    assert not (tmp_path / "img-1.part").exists()
    assert sink.held() == [IMG.id]
    assert await sink.digest(IMG.id) == (IMG.sha256, len(DATA))
    again = MemoryBytes()
    await transfer.copy(IMG, sink, again, chunk_size=50_000)  # it serves what it holds
    assert again.get(IMG.id) == DATA


async def test_resume_after_a_restart_rehashes_the_partial_file(tmp_path: Path) -> None:
    first = DirBytes(tmp_path)
    await first.reserve(IMG.id, IMG.size)
    for at in range(0, 100_000, 25_000):
        await first.write(IMG.id, transfer.Chunk.of(at, DATA[at : at + 25_000]))
    restarted = DirBytes(tmp_path)  # a new process: only the .part file is left
    assert await restarted.verified_offset(IMG.id) == 100_000
    outcome = await transfer.copy(IMG, source(), restarted, chunk_size=25_000)
    assert outcome.size == len(DATA)
    assert (tmp_path / "img-1.img").read_bytes() == DATA


async def test_a_corrupt_chunk_is_refused_and_not_written(tmp_path: Path) -> None:
    sink = DirBytes(tmp_path)
    good = transfer.Chunk.of(0, DATA[:1000])
    bad = transfer.Chunk(0, b"x" + good.data[1:], good.sha256)
    with pytest.raises(errors.ChunkCorrupt):
        await sink.write(IMG.id, bad)
    assert await sink.verified_offset(IMG.id) == 0


async def test_whole_image_mismatch_discards_and_never_commits(tmp_path: Path) -> None:
    sink = DirBytes(tmp_path)
    liar = catalog.Image(IMG.id, "cirros", IMG.size, "0" * 64, SiteId("src"))
    with pytest.raises(errors.ImageMismatch):
        await transfer.copy(liar, source(), sink)
    assert files(tmp_path) == []


async def test_ids_that_are_not_plain_names_are_refused(tmp_path: Path) -> None:
    sink = DirBytes(tmp_path / "store")
    for bad in ("../escape", "a/b", ".hidden"):
        with pytest.raises(errors.InvalidImage):
            await sink.verified_offset(ImageId(bad))
    assert not (tmp_path / "escape.part").exists()


async def test_a_full_cache_says_how_much_room_is_missing(tmp_path: Path) -> None:
    sink = DirBytes(tmp_path, capacity=1000)
    with pytest.raises(errors.CacheFull) as caught:
        await transfer.copy(IMG, source(), sink)
    assert caught.value.needed == len(DATA) and caught.value.free <= 1000


async def test_remove_and_an_unknown_image(tmp_path: Path) -> None:
    sink = DirBytes(tmp_path)
    await transfer.copy(IMG, source(), sink)
    await sink.remove(IMG.id)
    assert sink.held() == [] and not sink.has(IMG.id)
    with pytest.raises(errors.UnknownImage):
        await sink.digest(IMG.id)
    with pytest.raises(errors.UnknownImage):
        async for _ in sink.chunks(IMG.id, 0, 1024):
            pass


async def test_an_empty_image(tmp_path: Path) -> None:
    empty = catalog.Image(ImageId("empty"), "e", 0, hashlib.sha256(b"").hexdigest(), SiteId("src"))
    src = MemoryBytes()
    src.put(empty.id, b"")
    sink = DirBytes(tmp_path)
    await transfer.copy(empty, src, sink)
    assert (tmp_path / "empty.img").read_bytes() == b""


async def test_an_image_written_to_while_audited_is_reported_as_changing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site still putting the file in place: its digest would be of no version of it."""
    store = DirBytes(tmp_path)
    path = tmp_path / "img-1.img"
    path.write_bytes(DATA[:100_000])
    real = hashlib.new

    class Growing:  # the site's own writer appends the rest after the audit's first read
        def __init__(self, algo: str) -> None:
            self.h = real(algo)
            self.written = False

        def update(self, block: bytes) -> None:
            if not self.written:
                self.written = True
                with path.open("ab") as f:
                    f.write(DATA[100_000:])
            self.h.update(block)

        def hexdigest(self) -> str:
            return self.h.hexdigest()

    monkeypatch.setattr(hashlib, "new", Growing)
    with pytest.raises(errors.ImageChanging, match="img-1 changed"):
        await store.digest(IMG.id)
    monkeypatch.undo()
    assert await store.digest(IMG.id) == (IMG.sha256, len(DATA)), "settled: judged again"
