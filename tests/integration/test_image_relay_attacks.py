"""Attacks on the image relay, on real mTLS with real certificates and the copy orders in
real etcd: what the attacker gets, and that nothing changed.

site-001 holds a registered image whose policy targets region-2 (only site-002 is
ordered to copy it) and a file it never registered. With site-003's certificate, or with
site-002's for anything but its order, the relay refuses before the source reads a byte;
a ``chunk_size`` of 2^31 is refused by the relay and by the agent serving before any
read, so the source allocates nothing for it (before the fix: 2 GiB reserved).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from meridian.v1 import image_pb2 as ipb
from meridian.v1 import image_pb2_grpc as ipb_grpc

from broker.gateway import relay as relay_mod
from broker.store.etcd import EtcdStore
from broker.store.protocol import Store
from replication import catalog
from replication.catalog import Entry, ImageId, Replica, SiteId, State
from replication.transfer import Chunk
from siteagent.imagewire import SiteDir
from tests.support import imagerelay

pytestmark = [pytest.mark.grpc, pytest.mark.etcd]

DATA = os.urandom(3 * 1024 * 1024 + 17)
SECRET = os.urandom(200_000)
SITES = ["site-001", "site-002", "site-003"]


class Counting(SiteDir):
    """site-001's image directory, counting every read the relay asks for."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[tuple[str, int]] = []

    async def chunks(self, image: ImageId, offset: int, chunk_size: int) -> AsyncIterator[Chunk]:
        self.reads.append((image, chunk_size))
        async for c in super().chunks(image, offset, chunk_size):
            yield c


def registered() -> catalog.Image:
    return catalog.Image(
        id=ImageId("img-vnf"),
        name="vnf-base",
        size=len(DATA),
        sha256=hashlib.sha256(DATA).hexdigest(),
        source_site=SiteId("site-001"),
    )


async def catalog_state(store: Store) -> None:
    """What the replication controller writes: site-002 (region-2) ordered from site-001."""
    img = registered()
    await store.put(f"images/{img.id}", Entry(img, policy="region=region-2").encode())
    held = Replica(img.id, SiteId("site-001"), State.ACTIVE, offset=img.size, sha256=img.sha256)
    ordered = Replica(img.id, SiteId("site-002"), State.TRANSFERRING, source="site-001")
    for r in (held, ordered):
        await store.put(f"images/{img.id}/replicas/{r.site}", catalog.encode_replica(r))


async def snapshot(store: Store) -> list[tuple[str, bytes, int]]:
    items, _ = await store.get_prefix("")
    return [(kv.key, kv.value, kv.mod_revision) for kv in items]


async def pull(
    channel: grpc.aio.Channel, image: str, source: str, chunk_size: int = 64 * 1024
) -> tuple[grpc.StatusCode, str, int]:
    """(status, details, bytes received) of one raw ``Pull``."""
    call = ipb_grpc.ImageTransferStub(channel).Pull(
        ipb.PullRequest(image_id=image, source_site=source, chunk_size=chunk_size)
    )
    got = 0
    try:
        async for msg in call:
            got += len(msg.data)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or "", got
    return grpc.StatusCode.OK, "", got


@pytest.fixture
async def fed(
    tmp_path: Path, etcd_store: EtcdStore
) -> AsyncIterator[tuple[imagerelay.Federation, Counting]]:
    source = Counting(tmp_path / "site-001")
    (source.root / "img-vnf.img").write_bytes(DATA)
    (source.root / "unregistered.img").write_bytes(SECRET)  # never registered
    await catalog_state(etcd_store)
    async with imagerelay.federation(tmp_path, SITES, store=etcd_store) as federation:
        await federation.start_site("site-001", serve=source)
        for site in SITES[1:]:
            await federation.start_site(site)
        yield federation, source


async def test_only_the_ordered_target_gets_bytes_from_the_verified_holder(
    fed: tuple[imagerelay.Federation, Counting], etcd_store: EtcdStore
) -> None:
    federation, source = fed
    before = await snapshot(etcd_store)
    attacker = federation.sites["site-003"].channel
    target = federation.sites["site-002"].channel
    attacks = {
        "not targeted (region-1 site)": await pull(attacker, "img-vnf", "site-001"),
        "never registered": await pull(attacker, "unregistered", "site-001"),
        "ordered site, unregistered file": await pull(target, "unregistered", "site-001"),
        "ordered site, unassigned source": await pull(target, "img-vnf", "site-003"),
        "source pulling its own order's target": await pull(
            federation.sites["site-001"].channel, "img-vnf", "site-002"
        ),
        "path in the image id": await pull(attacker, "../img-vnf", "site-001"),
    }
    for what, (code, details, got) in attacks.items():
        assert (code, got) == (grpc.StatusCode.PERMISSION_DENIED, 0), (what, details)
    assert "no copy order" in attacks["not targeted (region-1 site)"][1]
    assert "not in the catalog" in attacks["ordered site, unregistered file"][1]
    assert source.reads == [], "the source was never asked for a byte"
    assert await snapshot(etcd_store) == before, "etcd unchanged"

    # the order itself is served, in full: the refusals above are not a broken relay
    code, _, got = await pull(target, "img-vnf", "site-001")
    assert (code, got) == (grpc.StatusCode.OK, len(DATA))


async def test_a_replica_that_is_not_verified_is_not_a_source(
    fed: tuple[imagerelay.Federation, Counting], etcd_store: EtcdStore
) -> None:
    federation, source = fed
    img = registered()
    for state, sha in ((State.TRANSFERRING, ""), (State.ACTIVE, "0" * 64), (State.FAILED, "")):
        r = Replica(img.id, SiteId("site-001"), state, sha256=sha, source="site-001")
        await etcd_store.put(f"images/{img.id}/replicas/site-001", catalog.encode_replica(r))
        code, details, got = await pull(federation.sites["site-002"].channel, img.id, "site-001")
        assert (code, got) == (grpc.StatusCode.PERMISSION_DENIED, 0), state
        assert "no verified replica" in details
    assert source.reads == []


async def test_a_2_gib_chunk_is_refused_before_any_read(
    fed: tuple[imagerelay.Federation, Counting], etcd_store: EtcdStore
) -> None:
    federation, source = fed
    before = await snapshot(etcd_store)
    tracemalloc.start()
    try:
        code, details, got = await pull(
            federation.sites["site-002"].channel, "img-vnf", "site-001", chunk_size=1 << 31
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (code, got) == (grpc.StatusCode.INVALID_ARGUMENT, 0)
    assert "chunk_size 2147483648" in details
    assert source.reads == []
    assert peak < 32 << 20, f"{peak >> 20} MiB allocated while refusing"
    assert await snapshot(etcd_store) == before


async def test_the_agent_serving_bounds_the_chunk_too(
    fed: tuple[imagerelay.Federation, Counting],
) -> None:
    """A broker that forwarded 2^31 (an older replica, a bug) still gets no read."""
    federation, source = fed
    relay = federation.relay
    rid = "unbounded-1"
    tr = relay_mod._Transfer("site-001", asyncio.Queue(4))
    relay._transfers[rid] = tr
    tracemalloc.start()
    try:
        relay._servers["site-001"].put_nowait(
            ipb.ServeRequest(request_id=rid, image_id="img-vnf", chunk_size=1 << 31)
        )
        answer = await asyncio.wait_for(tr.queue.get(), 10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        tr.closed.set()
        relay._transfers.pop(rid, None)
    assert answer.data == b"" and "chunk_size 2147483648" in answer.error
    assert source.reads == []
    assert peak < 32 << 20, f"{peak >> 20} MiB allocated while refusing"
