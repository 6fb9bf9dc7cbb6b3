"""Swarming: a destination fetches an image's pieces from every holder it may reach.

``fetch`` asks each ``Peer`` (a source, or another destination that verified pieces)
which pieces it holds, and keeps up to ``per_peer`` piece requests running on each,
rarest piece first (the fewest holders; ties broken in an order of the destination's
own, so destinations starting together ask for different pieces and can trade them).
Each piece is checked against the manifest before it is stored (``PieceFile.write``);
meanwhile the destination serves the pieces it verified to the others. The haves are
asked again every ``refresh`` seconds while pieces are missing: other destinations gain
pieces as they go.

Invariants: a peer that sent a piece failing its sha256 is reported (``report``) and
never asked again in this fetch, and the piece is fetched elsewhere; a peer that goes
away loses its pieces until it answers again; the image becomes whole only through
``PieceFile.finish`` (whole-image sha256 and multihash against the catalog).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from replication import errors
from replication.catalog import ImageId
from replication.pieces import PieceFile


class Peer(Protocol):
    """A site that may hold pieces of the image (reached directly under a grant)."""

    site: str

    async def have(self, image: ImageId, count: int) -> set[int]:
        """The pieces it holds verified (``PeerGone`` / ``SourceFailed`` if it cannot say)."""
        ...

    async def piece(self, image: ImageId, offset: int, length: int) -> bytes:
        """The bytes of one piece, as the peer read them (not yet verified)."""
        ...


Report = Callable[[str, str], Awaitable[None]]
Progress = Callable[[int, float], Awaitable[None]]


@dataclass
class Outcome:
    image: ImageId
    seconds: float
    pieces_from: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)  # peer -> why (corrupt pieces)
    failures: int = 0  # piece requests that failed (peer gone, piece not there)


class _Swarm:
    def __init__(self, file: PieceFile, peers: Sequence[Peer], per_peer: int, seed: str) -> None:
        self.file, self.manifest = file, file.manifest
        self.peers = {p.site: p for p in peers}
        self.per_peer = per_peer
        self.haves: dict[str, set[int]] = {}
        self.busy: dict[str, int] = {}
        self.inflight: dict[asyncio.Task[bytes], tuple[int, str]] = {}
        order = list(range(len(self.manifest)))
        random.Random(seed).shuffle(order)
        self.tiebreak = {i: n for n, i in enumerate(order)}
        self.out = Outcome(file.image.id, 0.0)

    async def refresh(self) -> None:
        # a peer known to hold every piece is not asked again (it only gains pieces):
        # each ask is a call the peer answers, the most frequent one of a swarm
        whole = len(self.manifest)
        live = [
            s
            for s in self.peers
            if s not in self.out.excluded and len(self.haves.get(s, ())) < whole
        ]

        async def ask(site: str) -> None:
            try:
                self.haves[site] = await self.peers[site].have(
                    self.file.image.id, len(self.manifest)
                )
            except errors.ReplicationError:
                self.haves.pop(site, None)

        await asyncio.gather(*(ask(s) for s in live))

    def assign(self) -> None:
        pending = {i for i, _ in self.inflight.values()}
        wanted = self.file.missing() - pending
        rarity = {i: sum(i in h for h in self.haves.values()) for i in wanted}
        for i in sorted(wanted, key=lambda i: (rarity[i], self.tiebreak[i])):
            holders = [
                s for s, h in self.haves.items() if i in h and self.busy.get(s, 0) < self.per_peer
            ]
            if not holders:
                continue
            site = min(holders, key=lambda s: (self.busy.get(s, 0), self.tiebreak[i] % 7, s))
            at, n = self.manifest.span(i)
            task = asyncio.ensure_future(self.peers[site].piece(self.file.image.id, at, n))
            self.inflight[task] = (i, site)
            self.busy[site] = self.busy.get(site, 0) + 1

    async def landed(self, task: asyncio.Task[bytes], report: Report | None) -> None:
        i, site = self.inflight.pop(task)
        self.busy[site] -= 1
        try:
            data = task.result()
        except errors.ReplicationError:
            self.out.failures += 1
            self.haves.get(site, set()).discard(i)  # gone, or not there: ask again later
            return
        try:
            await self.file.write(i, data)
        except errors.ChunkCorrupt:
            why = f"piece {i} of {self.file.image.id} failed its sha256 check"
            self.out.excluded[site] = why
            self.haves.pop(site, None)
            if report is not None:
                await report(site, why)
            return
        self.out.pieces_from[site] = self.out.pieces_from.get(site, 0) + 1

    async def cancel(self) -> None:
        for task in self.inflight:
            task.cancel()
        await asyncio.gather(*self.inflight, return_exceptions=True)


async def fetch(
    file: PieceFile,
    peers: Sequence[Peer],
    *,
    per_peer: int = 2,
    refresh: float = 0.5,
    stall_after: float = 30.0,
    seed: str = "",
    report: Report | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Every missing piece of ``file`` from ``peers``, then the whole-image check.
    ``SourceFailed`` when no peer has offered a missing piece for ``stall_after`` s."""
    started = time.monotonic()
    swarm = _Swarm(file, peers, per_peer, seed)
    moved = started
    try:
        await swarm.refresh()
        asked = time.monotonic()
        while file.missing():
            swarm.assign()
            if not swarm.inflight:
                if time.monotonic() - moved > stall_after:
                    raise errors.SourceFailed(
                        f"no peer offers {len(file.missing())} pieces of {file.image.id}"
                    )
                await asyncio.sleep(refresh)
                await swarm.refresh()
                asked = time.monotonic()
                continue
            done, _ = await asyncio.wait(
                swarm.inflight, timeout=refresh, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                await swarm.landed(task, report)
            if done:
                moved = time.monotonic()
                if progress is not None:
                    held = len(file.held) * file.manifest.piece_size
                    await progress(min(held, file.manifest.size), 0.0)
            if time.monotonic() - asked >= refresh:
                await swarm.refresh()
                asked = time.monotonic()
    finally:
        await swarm.cancel()
    await file.finish()
    swarm.out.seconds = time.monotonic() - started
    return swarm.out
