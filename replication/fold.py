"""The whole-image digests of a copy being received, with each byte hashed once on the
receiver's path.

A receiver must check every chunk before it keeps a byte (so a corrupt chunk is refused
and a copy resumes from verified bytes) and compare the whole image's sha256 (and
Glance's multihash) with the catalog before it activates it. Hashing each byte once for
the chunk and once more for the whole image made the receiver the bottleneck of a direct
transfer, so ``Received`` hashes each byte once on the transfer's path:

- a chunk whose sha256 is a **prefix digest** (``Chunk.prefix``: the digest of the image
  from byte 0 to the chunk's end, what a direct source sends) is checked by folding it
  into a copy of the running whole-image sha256 and comparing — one pass both checks the
  chunk and advances the whole-image digest, which is kept only on a match;
- a chunk with its own sha256 (the relay) is checked against it, and its bytes are then
  folded into the whole-image sha256 **behind**, on a thread of its own (``Fold``), while
  the next chunk is received and checked;
- the multihash (Glance's ``os_hash_value``, sha512) is always folded behind;
- a swarm's pieces, verified against the piece list as they land in any order, are
  folded as the verified prefix grows: ``Fold`` is fed readers of them, which read the
  pieces back from the file on the fold thread (``replication.pieces.PieceFile``).

Invariants: a byte is folded exactly once, in order, and only after its chunk checked
out; a digest is read only once every byte kept before it is folded (``hexdigests``
waits); at most ``DEPTH`` chunks wait to be folded (memory stays bounded; a reader that
fails leaves ``failed`` set, and digests that are not the bytes' are never used); a fold's thread
ends after ``IDLE_S`` idle and starts again with the next feed, so an abandoned copy
leaves none behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import threading
from collections.abc import Callable
from typing import Any

from replication import errors
from replication.transfer import Chunk

IDLE_S = 10.0
DEPTH = 8

Bytes = bytes | Callable[[], bytes]  # the bytes, or how the fold thread reads them


class Fold:
    """Running digests (``algos``) of the bytes fed, folded in order on a thread."""

    def __init__(self, *algos: str, depth: int = DEPTH) -> None:
        self.hashes: dict[str, Any] = {a: hashlib.new(a) for a in algos}
        self._queue: queue.Queue[Bytes] = queue.Queue(depth)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.failed = ""  # why a reader failed: the digests are then not the bytes'

    def update(self, data: bytes) -> None:
        """Fold ``data`` now, on the caller's thread (nothing may be queued)."""
        for h in self.hashes.values():
            h.update(data)

    async def feed(self, data: Bytes) -> None:
        """Queue ``data`` (or a reader of the bytes, called on the fold thread) to be
        folded after what was fed before; waits only while ``depth`` feeds are queued."""
        if not self.hashes:
            return
        try:
            self._queue.put_nowait(data)
        except queue.Full:
            await asyncio.to_thread(self._queue.put, data)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fold", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = self._queue.get(timeout=IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():  # a later feed finds no thread: starts one
                        self._thread = None
                        return
                continue
            try:
                self.update(data if isinstance(data, bytes) else data())
            except OSError as exc:
                self.failed = self.failed or f"cannot read the bytes to fold: {exc}"
            finally:
                self._queue.task_done()

    async def drained(self) -> None:
        """Return once every byte fed so far is folded."""
        if self._queue.unfinished_tasks:
            await asyncio.to_thread(self._queue.join)


class Received:
    """The verified prefix of one image being received: its size and whole-image digests
    (sha256, and the ``behind`` algorithms, e.g. sha512, folded on a thread)."""

    def __init__(self, *behind: str) -> None:
        self.size = 0
        self._sha256 = Fold("sha256")
        self._behind = Fold(*behind)

    def rebuild(self, data: bytes) -> None:
        """Fold bytes verified earlier (a partial copy re-read after a restart), now."""
        self._sha256.update(data)
        self._behind.update(data)
        self.size += len(data)

    async def ready(self, chunk: Chunk) -> None:
        """Wait until ``check`` may run for ``chunk``: a prefix digest is compared with
        the running sha256, so every byte before it must be folded."""
        if chunk.prefix:
            await self._sha256.drained()

    def check(self, chunk: Chunk) -> Any:
        """On a worker thread, after ``ready``: the running sha256 with ``chunk`` folded
        in (a prefix chunk) or ``True`` (a chunk that matches its own sha256); ``None``
        when the chunk is corrupt. Nothing changes until ``keep``."""
        if not chunk.prefix:
            return True if chunk.intact() else None
        h = self._sha256.hashes["sha256"].copy()
        h.update(chunk.data)
        return h if h.digest() == chunk.sha256 else None

    async def keep(self, chunk: Chunk, checked: Any) -> None:
        """``chunk``'s bytes are kept: advance the digests (what ``check`` returned)."""
        if chunk.prefix:
            self._sha256.hashes["sha256"] = checked
        else:
            await self._sha256.feed(chunk.data)
        await self._behind.feed(chunk.data)
        self.size += len(chunk.data)

    async def absorb(self, chunk: Chunk) -> None:
        """``ready``, ``check`` on a worker thread and ``keep``; ``ChunkCorrupt`` with
        nothing changed when the chunk does not check out."""
        await self.ready(chunk)
        checked = await asyncio.to_thread(self.check, chunk)
        if checked is None:
            raise errors.ChunkCorrupt(chunk.offset)
        await self.keep(chunk, checked)

    async def hexdigests(self, algo: str) -> tuple[str, str]:
        """(sha256, ``algo``) of every byte kept (``algo`` must be sha256 or one of the
        ``behind`` algorithms)."""
        await self._sha256.drained()
        await self._behind.drained()
        sha = self._sha256.hashes["sha256"].hexdigest()
        other = self._behind.hashes.get(algo)
        return str(sha), str(other.hexdigest() if other is not None else sha)
