"""``siteagent.glancestore.GlanceImages`` against minicloud site 1's real Glance.

Serving resumes at any offset (an HTTP Range read), receiving resumes from the staging a
restarted agent finds on disk, a cut upload is restarted from that staging (Glance cannot
resume one) and leaves no half image behind (nor does a killed agent's, at its next
upload), and an upload whose bytes Glance hashes
differently from the catalog's os_hash_value is deleted, never left as a Meridian image
(invariant 8). Audit calls see only Meridian-marked images.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from replication import catalog, errors, transfer
from replication.catalog import ImageId, SiteId
from replication.transfer import Chunk
from siteagent.drivers.openstack_support import connect
from siteagent.glancestore import MARK, GlanceImages
from tests.support.minicloud import CLOUD, Minicloud

pytestmark = [pytest.mark.openstack]

DATA = os.urandom(2 * (1 << 20) + 777)
CHUNK = 256 * 1024


def entry(image: ImageId, data: bytes = DATA, **changes: Any) -> catalog.Image:
    fields: dict[str, Any] = {
        "id": image,
        "name": f"glancestore-{image}",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "source_site": SiteId("elsewhere"),
        "os_hash_algo": "sha512",
        "os_hash_value": hashlib.sha512(data).hexdigest(),
    }
    fields.update(changes)
    return catalog.Image(**fields)


class Bytes:
    """A ``ByteSource`` over bytes in memory: the peer side, which is not under test."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def chunks(self, image: ImageId, offset: int, chunk_size: int) -> AsyncIterator[Chunk]:
        for at in range(offset, len(self.data), chunk_size):
            yield Chunk.of(at, self.data[at : at + chunk_size])


@pytest.fixture
def image_id() -> ImageId:
    return ImageId(f"img-gs-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def store(
    minicloud: Minicloud, tmp_path: Path, image_id: ImageId
) -> AsyncIterator[GlanceImages]:
    glance = GlanceImages(CLOUD, tmp_path / "staging", timeout=120.0)
    yield glance
    conn = connect(cloud=CLOUD)
    try:
        for found in conn.image.images():
            if (found.properties or {}).get(MARK) == image_id:
                conn.image.delete_image(found, ignore_missing=True)
    finally:
        conn.close()
        glance.close()


def glance_images(image_id: str) -> list[Any]:
    conn = connect(cloud=CLOUD)
    try:
        return [i for i in conn.image.images() if (i.properties or {}).get(MARK) == image_id]
    finally:
        conn.close()


async def read_all(store: GlanceImages, image: ImageId, offset: int) -> bytes:
    return b"".join([c.data async for c in store.chunks(image, offset, CHUNK)])


async def test_received_image_is_served_from_any_offset_and_audited(
    store: GlanceImages, image_id: ImageId
) -> None:
    image = entry(image_id)
    assert not await store.holds(image_id)
    await store.expect(image)
    await transfer.copy(image, Bytes(DATA), store, chunk_size=CHUNK)

    held = glance_images(image_id)
    assert [(i.status, i.size, i.hash_value) for i in held] == [
        ("active", len(DATA), image.os_hash_value)
    ]
    assert held[0].properties["meridian_sha256"] == image.sha256
    assert await store.holds(image_id) and image_id in await store.listing()
    assert await store.digest(image_id) == (image.sha256, len(DATA))
    assert await read_all(store, image_id, 0) == DATA
    mid = len(DATA) // 2 + 13  # a relay resumed mid-image: Glance serves the rest (Range)
    assert await read_all(store, image_id, mid) == DATA[mid:]
    assert await read_all(store, image_id, len(DATA)) == b""
    assert not list((store.staging.root).iterdir())  # the staged copy is gone once in Glance

    await store.remove(image_id)
    assert not await store.holds(image_id) and glance_images(image_id) == []
    with pytest.raises(errors.UnknownImage):
        await read_all(store, image_id, 0)


async def test_a_restarted_agent_resumes_from_its_staging(
    minicloud: Minicloud, store: GlanceImages, tmp_path: Path, image_id: ImageId
) -> None:
    image = entry(image_id)
    await store.reserve(image_id, image.size)
    for at in range(0, 3 * CHUNK, CHUNK):  # the first three chunks, then the agent dies
        await store.write(image_id, Chunk.of(at, DATA[at : at + CHUNK]))
    again = GlanceImages(CLOUD, tmp_path / "staging", timeout=120.0)
    try:
        assert await again.verified_offset(image_id) == 3 * CHUNK
        await again.expect(image)
        outcome = await transfer.copy(image, Bytes(DATA), again, chunk_size=CHUNK)
        assert outcome.retries == 0
        assert [i.hash_value for i in glance_images(image_id)] == [image.os_hash_value]
        assert await again.digest(image_id) == (image.sha256, len(DATA))
    finally:
        again.close()


class CutFirstUpload:
    """The real connection, except that the first image upload is cut half way (as a
    dropped link would); everything else reaches the real Glance."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.cut = 0
        self.image = self

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real.image, name)

    def put(self, url: str, *, data: Any, headers: dict[str, str]) -> Any:
        if self.cut == 0 and url.endswith("/file"):
            self.cut += 1
            data.read(len(data) // 2)
            raise ConnectionError("connection reset by peer (cut by the test)")
        return self.real.image.put(url, data=data, headers=headers)

    def close(self) -> None:
        self.real.close()


async def test_a_cut_upload_restarts_from_staging_and_leaves_no_half_image(
    minicloud: Minicloud, tmp_path: Path, image_id: ImageId
) -> None:
    conn = CutFirstUpload(connect(cloud=CLOUD))
    store = GlanceImages(CLOUD, tmp_path / "staging", timeout=120.0, connection=conn)
    try:
        image = entry(image_id)
        # what an agent killed mid-upload leaves: a marked image that never got its bytes
        body = {"name": "left", "disk_format": "raw", "container_format": "bare", MARK: image_id}
        left = conn.real.image.post("/images", json=body)
        assert left.status_code == 201, left.text
        assert not await store.holds(image_id)  # a queued image is not held
        await store.expect(image)
        await transfer.copy(image, Bytes(DATA), store, chunk_size=CHUNK)
        assert conn.cut == 1
        held = glance_images(image_id)  # the cut attempt's image and the leftover deleted
        assert [(i.status, i.hash_value) for i in held] == [("active", image.os_hash_value)]
    finally:
        for found in glance_images(image_id):
            conn.real.image.delete_image(found, ignore_missing=True)
        store.close()


async def test_glance_hash_not_the_catalogs_is_never_left_as_a_meridian_image(
    store: GlanceImages, image_id: ImageId
) -> None:
    # the staged bytes pass the catalog's sha256; Glance's sha512 of them is not the one
    # the catalog was registered with, so the Glance image is deleted
    image = entry(image_id, os_hash_value="0" * 128)
    await store.reserve(image_id, image.size)
    for at in range(0, len(DATA), CHUNK):
        await store.write(image_id, Chunk.of(at, DATA[at : at + CHUNK]))
    await store.expect(image)
    with pytest.raises(errors.ImageMismatch, match="os_hash_value"):
        await store.commit(image_id)
    assert glance_images(image_id) == []
    assert not await store.holds(image_id)
