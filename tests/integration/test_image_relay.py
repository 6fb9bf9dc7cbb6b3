"""Image replication through the broker relay on real mTLS: fan-out to 16 sites,
corruption in transit, a source killed mid-transfer, and bad input per site.

Many site agents run in this one process, each with its own certificate and channel.
The openstack tier (a real image from minicloud site 1 to site 2 with matching Glance
``os_hash_value``) is NOT here yet: it hooks in as a ``ByteSource``/``ByteSink`` pair on
the openstack driver, which is being built separately.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from replication import catalog, errors, fanout, throttle, transfer
from replication.catalog import ImageId, SiteId, State
from replication.store import MemoryBytes
from siteagent.imagewire import PullSource
from tests.support import imagerelay

pytestmark = [pytest.mark.grpc]

DATA = os.urandom(1_000_000 + 123)


def image(data: bytes = DATA, iid: str = "img-1") -> catalog.Image:
    return catalog.Image(
        id=ImageId(iid),
        name="cirros",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        os_hash_value=hashlib.sha512(data).hexdigest(),
        source_site=SiteId("src"),
    )


def seeded(data: bytes = DATA, iid: str = "img-1") -> MemoryBytes:
    m = MemoryBytes()
    m.put(ImageId(iid), data)
    return m


async def test_fan_out_to_16_sites_in_log_rounds(tmp_path: Path) -> None:
    dests = [f"site-{i:02d}" for i in range(16)]
    async with imagerelay.federation(tmp_path, ["src", *dests]) as fed:
        await fed.start_site("src", seeded())
        for d in dests:
            await fed.start_site(d)
        img = image()
        # a hop starts from a site that finished: the relay serves only verified replicas
        res = await fanout.run(
            img.id, [SiteId("src")], [SiteId(d) for d in dests], fed.copier(img), pipelined=False
        )
        assert res.failed() == {}
        assert res.rounds <= math.ceil(math.log2(16 + 1))
        for d in dests:
            assert fed.sites[d].store.get(img.id) == DATA
        assert fed.relay.peak_buffered <= 4, "the broker never buffers more than its depth"


class FlipBits:
    """Flips a bit in the chunks at the given offsets, once each, after hashing."""

    def __init__(self, *offsets: int) -> None:
        self.pending = set(offsets)
        self.flipped: list[int] = []

    def __call__(self, c: transfer.Chunk) -> transfer.Chunk:
        if c.offset in self.pending:
            self.pending.discard(c.offset)
            self.flipped.append(c.offset)
            bad = bytearray(c.data)
            bad[7] ^= 0x01
            return transfer.Chunk(c.offset, bytes(bad), c.sha256)
        return c


async def test_corrupt_chunks_in_transit_are_retried_and_never_activated(
    tmp_path: Path,
) -> None:
    async with imagerelay.federation(tmp_path, ["src", "dst"]) as fed:
        chunk = fed.chunk_size
        flips = FlipBits(0, 5 * chunk, 30 * chunk)
        await fed.start_site("src", seeded(), hook=flips)
        dst = await fed.start_site("dst")
        img = image()
        await fed.order(img, "dst", "src")
        out = await transfer.copy(img, PullSource(dst.channel, "src"), dst.store, chunk_size=chunk)
        assert flips.flipped == [0, 5 * chunk, 30 * chunk]
        # the source reads ahead of an abandoned request, so a flip may land in chunks the
        # destination never sees; the one at 0 is always seen
        assert 1 <= out.retries <= 3
        assert dst.store.get(img.id) == DATA


async def test_always_corrupt_source_is_never_activated(tmp_path: Path) -> None:
    def garble(c: transfer.Chunk) -> transfer.Chunk:
        return transfer.Chunk(c.offset, bytes(len(c.data)), c.sha256)

    async with imagerelay.federation(tmp_path, ["src", "dst"]) as fed:
        await fed.start_site("src", seeded(), hook=garble)
        dst = await fed.start_site("dst")
        await fed.order(image(), "dst", "src")
        with pytest.raises(errors.ChunkCorrupt):
            await transfer.copy(image(), PullSource(dst.channel, "src"), dst.store, max_retries=2)
        assert not dst.store.has(ImageId("img-1"))


class Stalling:
    """Serves ``inner`` but stops dead (like a hung agent) at ``stall_at``."""

    def __init__(self, inner: MemoryBytes, stall_at: int) -> None:
        self.inner, self.stall_at = inner, stall_at
        self.reached = asyncio.Event()

    async def chunks(
        self, image: ImageId, offset: int, chunk_size: int
    ) -> AsyncIterator[transfer.Chunk]:
        async for c in self.inner.chunks(image, offset, chunk_size):
            if c.offset >= self.stall_at:
                self.reached.set()
                await asyncio.Event().wait()
            yield c


async def test_resume_after_source_killed_mid_transfer(tmp_path: Path) -> None:
    async with imagerelay.federation(tmp_path, ["src", "dst"]) as fed:
        chunk = fed.chunk_size
        store = seeded()
        stalling = Stalling(store, 10 * chunk)
        src = await fed.start_site("src", store, serve=stalling)
        dst = await fed.start_site("dst")
        img = image()
        await fed.order(img, "dst", "src")
        copying = asyncio.create_task(
            transfer.copy(img, PullSource(dst.channel, "src"), dst.store, chunk_size=chunk)
        )
        await asyncio.wait_for(stalling.reached.wait(), 10)
        for _ in range(100):  # let the chunks in flight land
            if dst.store.partial_size(img.id) == 10 * chunk:
                break
            await asyncio.sleep(0.02)
        await src.kill()
        killed_at = dst.store.partial_size(img.id)
        assert killed_at == 10 * chunk
        starts: list[int] = []

        def watch(c: transfer.Chunk) -> transfer.Chunk:
            starts.append(c.offset)
            return c

        await fed.start_site("src", store, hook=watch)  # the agent restarts
        out = await asyncio.wait_for(copying, 20)
        assert out.retries >= 1
        assert dst.store.get(img.id) == DATA
        assert min(starts) == killed_at, "resumed from the last verified offset, not zero"


async def test_bad_input_fails_per_site_and_the_rest_carries_on(tmp_path: Path) -> None:
    good = [f"ok-{i}" for i in range(4)]
    async with imagerelay.federation(tmp_path, ["src", "full", "picky", *good]) as fed:
        await fed.start_site("src", seeded())
        await fed.start_site("full", MemoryBytes(capacity=1000))
        await fed.start_site("picky", MemoryBytes(reject="glance: disk format not allowed"))
        for g in good:
            await fed.start_site(g)
        img = image()
        res = await fanout.run(
            img.id,
            [SiteId("src")],
            [SiteId(s) for s in ["full", "picky", *good]],
            fed.copier(img),
            pipelined=False,
        )
        failed = res.failed()
        assert set(failed) == {"full", "picky"}
        assert "CacheFull" in failed["full"]
        assert "disk format not allowed" in failed["picky"]
        for g in good:
            assert res.replicas[SiteId(g)].state is State.ACTIVE
            assert fed.sites[g].store.get(img.id) == DATA


async def test_unknown_image_and_unknown_source(tmp_path: Path) -> None:
    async with imagerelay.federation(tmp_path, ["src", "dst"]) as fed:
        await fed.start_site("src", seeded())
        dst = await fed.start_site("dst")
        with pytest.raises(errors.SourceFailed, match="nope"):
            await transfer.copy(
                image(iid="nope"), PullSource(dst.channel, "src"), dst.store, max_retries=0
            )
        await fed.order(image(), "dst", "elsewhere")  # ordered, but not connected here
        with pytest.raises(errors.PeerGone, match="not connected"):
            await transfer.copy(
                image(), PullSource(dst.channel, "elsewhere"), dst.store, max_retries=0
            )


async def test_source_bytes_not_matching_catalog(tmp_path: Path) -> None:
    async with imagerelay.federation(tmp_path, ["src", "dst"]) as fed:
        corrupt = DATA[:-1] + bytes([DATA[-1] ^ 0xFF])  # differs from DATA whatever DATA is
        await fed.start_site("src", seeded(corrupt))
        dst = await fed.start_site("dst")
        await fed.order(image(), "dst", "src")
        with pytest.raises(errors.ImageMismatch, match="sha256"):
            await transfer.copy(image(), PullSource(dst.channel, "src"), dst.store)
        assert not dst.store.has(ImageId("img-1"))
        assert dst.store.partial_size(ImageId("img-1")) == 0


async def test_site_bandwidth_cap_holds_across_streams(tmp_path: Path) -> None:
    async with imagerelay.federation(tmp_path, ["src", "a", "b"]) as fed:
        rate = 4_000_000.0
        cap = throttle.Throttle(rate, burst=fed.chunk_size)
        await fed.start_site("src", seeded(), throttle=cap)
        a, b = await fed.start_site("a"), await fed.start_site("b")
        img = image()
        await fed.order(img, "a", "src")
        await fed.order(img, "b", "src")
        started = time.monotonic()
        await asyncio.gather(
            transfer.copy(img, PullSource(a.channel, "src"), a.store, chunk_size=fed.chunk_size),
            transfer.copy(img, PullSource(b.channel, "src"), b.store, chunk_size=fed.chunk_size),
        )
        elapsed = time.monotonic() - started
        assert elapsed >= (2 * img.size - fed.chunk_size) / rate * 0.95
        assert a.store.get(img.id) == DATA and b.store.get(img.id) == DATA
