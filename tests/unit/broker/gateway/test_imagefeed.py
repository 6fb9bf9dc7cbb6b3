"""Copy orders out, reports in: ``ImageOrders`` over the in-memory store."""

from __future__ import annotations

import asyncio
import hashlib
import json

from meridian.v1 import image_pb2 as ipb

from broker.gateway.imagefeed import ImageOrders
from broker.store import keys
from broker.store.memory import MemoryStore
from replication import catalog
from replication.catalog import Entry, Image, ImageId, Replica, SiteId

SHA = hashlib.sha256(b"x").hexdigest()
IMG = Image(ImageId("img"), "cirros", 1, SHA, SiteId("src"), os_hash_value="ab" * 64)


async def until(probe: object, what: str) -> None:
    for _ in range(200):
        if callable(probe) and probe():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what} did not happen")


async def put_replica(store: MemoryStore, r: Replica) -> None:
    await store.put(keys.image_replica(r.image, r.site), catalog.encode_replica(r))


async def test_one_order_per_attempt_and_again_on_reconnect() -> None:
    store = MemoryStore()
    orders = ImageOrders(store, chunk_size=4096)
    task = asyncio.create_task(orders.run())
    try:
        outbox = orders.attach("a")
        await store.put(keys.image("img"), Entry(IMG).encode())
        copying = Replica(IMG.id, SiteId("a")).queue().start(source="src")
        await put_replica(store, copying)
        await until(lambda: outbox.qsize() == 1, "the first order")
        order = outbox.get_nowait()
        assert (order.image_id, order.source_site, order.attempt) == ("img", "src", 1)
        assert (order.sha256, order.os_hash_value, order.chunk_size) == (SHA, "ab" * 64, 4096)
        await put_replica(store, copying.progress(1, 10.0))  # progress: no new order
        await asyncio.sleep(0.05)
        assert outbox.empty()
        orders.detach("a", outbox)
        again = orders.attach("a")  # the agent reconnected: it may have lost the order
        assert again.get_nowait().attempt == 1
        retry = copying.queue().start(source="b")
        await put_replica(store, retry)
        await until(lambda: again.qsize() == 1, "the retry's order")
        assert (again.get_nowait().attempt, retry.attempts) == (2, 2)
    finally:
        task.cancel()


async def test_reports_and_audits_are_written_where_the_controller_reads() -> None:
    store = MemoryStore()
    orders = ImageOrders(store)
    progress = ipb.ReplicaReport(image_id="img", state="transferring", offset=10, attempt=3)
    await orders.report("a", ipb.ImageReport(replicas=[progress]))
    kv = await store.get(keys.image_copy("a", "img"))
    assert kv is not None and json.loads(kv.value)["offset"] == 10
    await orders.report("a", ipb.ImageReport(replicas=[progress]))  # unchanged: no write
    again = await store.get(keys.image_copy("a", "img"))
    assert again is not None and again.mod_revision == kv.mod_revision
    audit = ipb.ImageReport(
        audit=True,
        replicas=[
            ipb.ReplicaReport(image_id="img", state="active", sha256=SHA, size=1),
            ipb.ReplicaReport(image_id="other", state="busy"),
        ],
    )
    await orders.report("a", audit)
    kv = await store.get(keys.image_audit("a"))
    assert kv is not None
    body = json.loads(kv.value)
    assert body["held"] == {"img": {"sha256": SHA, "size": 1}} and body["busy"] == ["other"]
