"""Placement asks for images (issue 15 item 4): a VNF placed at a site that lacks its
``sw_image`` orders the copy (the site joins the catalog image's targets, an event says
why) and the VNF's reason says its members wait for it; a site that holds it, or already
has it ordered, orders nothing; a ``sw_image`` that no catalog image matches is said so."""

from __future__ import annotations

import time
from types import SimpleNamespace

from broker.controllers.imageorders import missing
from broker.controllers.vnfs import VnfController
from broker.models import codec
from broker.models import vnf as model
from broker.store import keys
from broker.store.memory import MemoryStore
from replication import catalog
from replication.catalog import Entry, ImageId, Replica, SiteId
from tests.support import placement as P

SITES = P.regions(2)
DESC = P.sample("vfirewall")
SHA = DESC.sw_images[0].checksum
IMAGE = catalog.Image(ImageId("vfw-4.2"), "vfw", 1 << 30, SHA, SiteId("s1-0"))


async def setup(
    *, image: bool = True, active_at: tuple[str, ...] = ()
) -> tuple[MemoryStore, VnfController]:
    store = MemoryStore()
    await P.seed_store(store, SITES, P.paris_latency(SITES))
    if image:
        await store.put(keys.image(IMAGE.id), Entry(IMAGE, "", (), 1, 1).encode())
    for site in active_at:
        r = Replica(IMAGE.id, SiteId(site)).queue().start(source=site).verify().activate(IMAGE.size)
        await store.put(keys.image_replica(IMAGE.id, site), catalog.encode_replica(r))
    controller = VnfController(store, await store.put(keys.LEADER, b"me"))
    controller.snap = await controller.live.current()
    return store, controller


async def place(store: MemoryStore, controller: VnfController) -> model.VnfRecord:
    now = int(time.time() * 1000)
    record = model.VnfRecord("fw-1", DESC.tenant, model.to_json(DESC), created_ms=now)
    await store.put(keys.vnf(record.id), codec.encode(record))
    await controller.step(record.id)
    kv = await store.get(keys.vnf(record.id))
    assert kv is not None
    return codec.decode(model.VnfRecord, kv.value)


async def entry(store: MemoryStore) -> Entry:
    kv = await store.get(keys.image(IMAGE.id))
    assert kv is not None
    return Entry.decode(kv.value)


async def events(store: MemoryStore) -> list[str]:
    kvs, _ = await store.get_prefix(keys.EVENTS)
    return [kv.value.decode() for kv in kvs]


async def test_a_vnf_placed_where_its_image_is_missing_orders_the_copy() -> None:
    store, controller = await setup()
    rec = await place(store, controller)
    assert rec.state is model.VnfState.PLACED
    sites = sorted({m.site for m in rec.members})
    e = await entry(store)
    assert set(sites) <= set(e.targets) and e.generation == 2
    for site in sites:
        assert f"image {IMAGE.id} copy ordered to {site}" in rec.reason
    assert rec.reason.startswith("members wait:")
    assert any("copy ordered" in text and "fw-1" in text for text in await events(store))


async def test_a_site_that_holds_the_image_or_has_it_ordered_orders_nothing() -> None:
    everywhere = tuple(s.id for s in SITES)
    store, controller = await setup(active_at=everywhere)
    rec = await place(store, controller)
    assert rec.state is model.VnfState.PLACED and rec.reason == ""
    assert (await entry(store)).generation == 1, "nothing ordered"
    assert all("copy ordered" not in t for t in await events(store))

    store, controller = await setup()
    first = await place(store, controller)
    assert first.reason
    placed = [
        SimpleNamespace(site=m.site, member=SimpleNamespace(vdu=m.vdu)) for m in first.members
    ]
    assert await missing(store, DESC, placed) == [], "ordered once: not again"  # type: ignore[arg-type]


async def test_an_image_no_catalog_entry_matches_is_said_so_and_nothing_is_written() -> None:
    store, controller = await setup(image=False)
    rec = await place(store, controller)
    assert rec.state is model.VnfState.PLACED
    assert "no catalog image has its checksum" in rec.reason
    kvs, _ = await store.get_prefix(keys.IMAGES)
    assert kvs == []
