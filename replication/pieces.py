"""Content-addressed pieces of an image, and the file that receives them in any order.

A ``Manifest`` splits an image into ``piece_size`` pieces (the last one shorter) and names
each by its sha256; its own digest (``Manifest.digest``: sha256 of the canonical encoding)
is what the catalog records and what a swarm transfer grant names, so a destination
trusts a piece list only when it is the one the broker signed.

``PieceFile`` is a destination's image being received piece by piece (``<id>.swarm`` in
the site's image directory, the verified-piece bitmap beside it in ``<id>.have``):
``write`` checks a piece against the manifest before a byte lands (the one hash of its
bytes on the receiving path); the verified pieces are folded into the whole-image digests
(sha256 and Glance's multihash) in order as the verified prefix grows, read back and
hashed behind, on a thread of their own (``replication.fold.Fold``: the writer never
waits for it), and ``finish`` compares them with the
catalog before it renames the file to ``<id>.img``. Invariants: only pieces whose sha256
matches the manifest are ever marked held, served (``read``) or counted; a ``<id>.img``
appears only after the whole-image match (invariant 8), every byte folded exactly once
and in order; a restart keeps exactly the pieces that re-verify.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replication import errors
from replication.catalog import Image, ImageId
from replication.fold import Fold
from replication.transfer import ByteSource

DEFAULT_PIECE = 4 << 20
MAX_PIECES = 1 << 16
MAX_RECORDED = 4096  # pieces of a list the catalog records: 256 KiB of hex, inside etcd's limit


@dataclass(frozen=True, slots=True)
class Manifest:
    """``size`` bytes in ``piece_size`` pieces; ``digests[i]`` is piece i's sha256."""

    size: int
    piece_size: int
    digests: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if self.piece_size <= 0:
            raise errors.InvalidImage("piece_size", "must be > 0")
        want = -(-self.size // self.piece_size)
        if len(self.digests) != want:
            raise errors.InvalidImage("pieces", f"{len(self.digests)} digests, {want} pieces")
        if want > MAX_PIECES:
            raise errors.InvalidImage("pieces", f"more than {MAX_PIECES} pieces")
        if any(len(d) != 32 for d in self.digests):
            raise errors.InvalidImage("pieces", "a piece digest is not 32 bytes")

    def __len__(self) -> int:
        return len(self.digests)

    def span(self, i: int) -> tuple[int, int]:
        """(offset, length) of piece ``i``."""
        at = i * self.piece_size
        return at, min(self.piece_size, self.size - at)

    def piece_at(self, offset: int, length: int) -> int | None:
        """The piece that is exactly ``[offset, offset+length)``, if any."""
        i, rest = divmod(offset, self.piece_size)
        if rest or not 0 <= i < len(self) or self.span(i)[1] != length:
            return None
        return i

    def intact(self, i: int, data: bytes) -> bool:
        return len(data) == self.span(i)[1] and hashlib.sha256(data).digest() == self.digests[i]

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "piece_size": self.piece_size,
            "pieces": [d.hex() for d in self.digests],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        try:
            digests = tuple(bytes.fromhex(str(h)) for h in d["pieces"])
            return cls(int(d["size"]), int(d["piece_size"]), digests)
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.InvalidImage("pieces", f"malformed piece list: {exc}") from exc

    def digest(self) -> str:
        """sha256 (hex) of the canonical encoding: what the catalog and a grant name."""
        body = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()


def manifest_of(data: bytes, piece_size: int = DEFAULT_PIECE) -> Manifest:
    digests = tuple(
        hashlib.sha256(data[at : at + piece_size]).digest()
        for at in range(0, len(data), piece_size)
    )
    return Manifest(len(data), piece_size, digests)


def manifest_of_file(path: Path, piece_size: int = DEFAULT_PIECE) -> Manifest:
    """The manifest of a file, read a piece at a time (run it on a worker thread)."""
    digests, size = [], 0
    with path.open("rb") as f:
        while block := f.read(piece_size):
            digests.append(hashlib.sha256(block).digest())
            size += len(block)
    return Manifest(size, piece_size, tuple(digests))


def piece_size_for(size: int, base: int = DEFAULT_PIECE) -> int:
    """The piece size a site lists an image in: ``base``, or whole MiB large enough that
    the list stays within ``MAX_RECORDED`` pieces (a 16 GiB image: 4 MiB pieces)."""
    least = -(-size // MAX_RECORDED)
    return max(base, -(-least // (1 << 20)) << 20)


async def manifest_of_source(
    source: ByteSource, image: ImageId, size: int, base: int = DEFAULT_PIECE
) -> Manifest:
    """The manifest of ``image`` as ``source`` serves it, in ``piece_size_for`` pieces
    (read once; the chunks need not fall on piece boundaries)."""
    piece = piece_size_for(size, base)
    digests: list[bytes] = []
    h, filled, total = hashlib.sha256(), 0, 0
    async for c in source.chunks(image, 0, min(piece, 1 << 20)):
        data = memoryview(c.data)
        while data:
            take = data[: piece - filled]
            h.update(take)
            filled, total, data = filled + len(take), total + len(take), data[len(take) :]
            if filled == piece:
                digests.append(h.digest())
                h, filled = hashlib.sha256(), 0
    if filled:
        digests.append(h.digest())
    return Manifest(total, piece, tuple(digests))


def bitmap(held: Iterable[int], count: int) -> bytes:
    out = bytearray(-(-count // 8))
    for i in held:
        out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def from_bitmap(data: bytes, count: int) -> set[int]:
    return {i for i in range(min(count, len(data) * 8)) if data[i // 8] >> (i % 8) & 1}


class PieceFile:
    """One image being received in pieces under ``root``; serves what it verified."""

    def __init__(self, root: Path, image: Image, manifest: Manifest) -> None:
        if manifest.size != image.size:
            raise errors.InvalidImage("pieces", f"cover {manifest.size} bytes, not {image.size}")
        self.image, self.manifest = image, manifest
        self.path = root / f"{image.id}.swarm"
        self.bits = root / f"{image.id}.have"
        self.done = root / f"{image.id}.img"
        self.held: set[int] = set()
        self._lock = asyncio.Lock()
        self._whole, self._folded = self._fold(), 0  # pieces [0, _folded) are queued

    def _fold(self) -> Fold:
        algos = ["sha256"] + ([self.image.os_hash_algo] if self.image.os_hash_value else [])
        # what waits is a reader of a piece, not its bytes: a writer never waits for it
        return Fold(*dict.fromkeys(algos), depth=len(self.manifest) + 1)

    def _reader(self, i: int) -> Callable[[], bytes]:
        """Piece ``i`` read back from the file, on the fold thread."""
        at, n = self.manifest.span(i)

        def read() -> bytes:
            with self.path.open("rb") as f:
                f.seek(at)
                return f.read(n)

        return read

    async def _advance(self) -> None:
        """Queue the held pieces that now extend the folded prefix."""
        while self._folded in self.held:
            await self._whole.feed(self._reader(self._folded))
            self._folded += 1

    async def open(self) -> None:
        """Create the file, or keep the pieces of an earlier attempt that still verify."""
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        if not self.path.exists():
            with self.path.open("wb") as f:
                f.truncate(self.manifest.size)
            self.bits.unlink(missing_ok=True)
            return
        marked = (
            from_bitmap(self.bits.read_bytes(), len(self.manifest)) if self.bits.exists() else set()
        )
        with self.path.open("rb") as f:
            for i in sorted(marked):
                at, n = self.manifest.span(i)
                f.seek(at)
                if self.manifest.intact(i, f.read(n)):
                    self.held.add(i)

    def missing(self) -> set[int]:
        return set(range(len(self.manifest))) - self.held

    async def write(self, i: int, data: bytes) -> None:
        """Store piece ``i`` if it matches the manifest, else ``ChunkCorrupt`` and nothing
        is written."""
        if not 0 <= i < len(self.manifest):
            raise errors.InvalidImage("piece", f"{i} is not a piece of {self.image.id}")
        at, _ = self.manifest.span(i)
        if not await asyncio.to_thread(self.manifest.intact, i, data):
            raise errors.ChunkCorrupt(at)

        def put() -> None:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.pwrite(fd, data, at)
                os.fsync(fd)
            finally:
                os.close(fd)

        async with self._lock:
            if i in self.held:
                return
            try:
                await asyncio.to_thread(put)
            except OSError as exc:
                raise errors.SinkRejected(f"cannot write {self.image.id}: {exc.strerror}") from exc
            self.held.add(i)
            self.bits.write_bytes(bitmap(self.held, len(self.manifest)))
            await self._advance()

    async def read(self, i: int) -> bytes:
        """A verified piece (``SourceFailed`` for one not held)."""
        if i not in self.held:
            raise errors.SourceFailed(f"piece {i} of {self.image.id} is not held here")
        at, n = self.manifest.span(i)

        def get() -> bytes:
            with self.path.open("rb") as f:
                f.seek(at)
                return f.read(n)

        return await asyncio.to_thread(get)

    async def finish(self) -> None:
        """Whole-image check against the catalog, then ``<id>.img``; a mismatch discards
        everything (``ImageMismatch``)."""
        if self.missing():
            raise errors.ImageMismatch(
                self.image.id, f"{len(self.manifest)} pieces", f"{len(self.held)}"
            )
        algo = self.image.os_hash_algo
        async with self._lock:
            await self._advance()  # pieces held since open and never written here
            await self._whole.drained()
            if self._whole.failed:
                raise errors.SinkRejected(f"{self.image.id}: {self._whole.failed}")
            sha = str(self._whole.hashes["sha256"].hexdigest())
            multi = self._whole.hashes.get(algo)
            multi = str(multi.hexdigest()) if multi is not None else ""
        wrong = ""
        if sha != self.image.sha256:
            wrong = f"sha256 {sha}"
        elif self.image.os_hash_value and multi != self.image.os_hash_value:
            wrong = f"{algo} {multi}"
        if wrong:
            await self.discard()
            raise errors.ImageMismatch(self.image.id, "the catalog's digests", wrong)
        os.replace(self.path, self.done)
        self.bits.unlink(missing_ok=True)

    async def discard(self) -> None:
        self.held.clear()
        self._whole, self._folded = self._fold(), 0
        self.path.unlink(missing_ok=True)
        self.bits.unlink(missing_ok=True)
