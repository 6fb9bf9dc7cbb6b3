"""Copy orders out, reports in: ``ImageOrders`` over the in-memory store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import pytest

from meridian.v1 import image_pb2 as ipb

from broker.errors import SettingsError
from broker.gateway.imagefeed import ImageOrders, grant_signer
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


async def test_a_source_that_reports_an_address_is_ordered_direct_with_a_grant() -> None:
    from replication import grant

    key = grant.Ed25519PrivateKey.generate()
    store = MemoryStore()
    orders = ImageOrders(store, signer=key, grant_ttl=60)
    task = asyncio.create_task(orders.run())
    try:
        await orders.report("src", ipb.ImageReport(audit=True, direct_address="10.0.0.1:7500"))
        kv = await store.get(keys.image_audit("src"))
        assert kv is not None and json.loads(kv.value)["direct_address"] == "10.0.0.1:7500"
        await orders.report("nat", ipb.ImageReport(audit=True))  # behind NAT: no address
        a, b = orders.attach("a"), orders.attach("b")
        await store.put(keys.image("img"), Entry(IMG).encode())
        await put_replica(store, Replica(IMG.id, SiteId("a")).queue().start(source="src"))
        await put_replica(store, Replica(IMG.id, SiteId("b")).queue().start(source="nat"))
        await until(lambda: a.qsize() == 1 and b.qsize() == 1, "both orders")
        direct, relayed = a.get_nowait(), b.get_nowait()
        assert direct.source_address == "10.0.0.1:7500"
        now = int(time.time() * 1000)
        ok = grant.refusal(
            direct.grant, key.public_key(), image="img", source="src", caller="a", now_ms=now
        )
        assert ok is None
        assert (relayed.source_address, relayed.grant) == ("", "")
    finally:
        task.cancel()


async def test_without_a_signing_key_every_order_names_the_relay() -> None:
    store = MemoryStore()
    orders = ImageOrders(store)
    task = asyncio.create_task(orders.run())
    try:
        await orders.report("src", ipb.ImageReport(audit=True, direct_address="10.0.0.1:7500"))
        a = orders.attach("a")
        await store.put(keys.image("img"), Entry(IMG).encode())
        await put_replica(store, Replica(IMG.id, SiteId("a")).queue().start(source="src"))
        await until(lambda: a.qsize() == 1, "the order")
        assert (a.get_nowait().source_address, "") == ("", "")
    finally:
        task.cancel()


def test_an_unreadable_grant_key_is_a_settings_error(tmp_path: Path) -> None:
    bad = tmp_path / "grant.pem"
    bad.write_text("not a key")
    with pytest.raises(SettingsError, match="grant_key_file"):
        grant_signer(str(bad))
    with pytest.raises(SettingsError, match="grant_key_file"):
        grant_signer(str(tmp_path / "missing.pem"))
    assert grant_signer("") is None


async def test_a_swarm_copy_is_ordered_with_the_piece_list_and_a_grant_per_peer() -> None:
    """The tracker's order: the catalog's piece list, every peer that serves directly
    (the holder, the other destinations; never a site behind NAT, never itself), each with
    a grant for that pair naming the piece list; a source's piece list for the catalog's
    bytes is written where the controller reads it, another site's or other bytes' not."""
    from replication import grant, pieces

    key = grant.Ed25519PrivateKey.generate()
    store = MemoryStore()
    orders = ImageOrders(store, signer=key, grant_ttl=60)
    task = asyncio.create_task(orders.run())
    manifest = pieces.manifest_of(b"x", 1 << 20)
    listed = json.dumps(manifest.to_dict())
    try:
        await store.put(keys.image("img"), Entry(IMG).encode())
        await until(lambda: "img" in orders._entries, "the entry followed")
        for site in ("src", "a", "b"):
            await orders.report(
                site,
                ipb.ImageReport(
                    audit=True,
                    direct_address=f"{site}:7500",
                    piece_lists=[ipb.PieceList(image_id="img", sha256=SHA, pieces=listed)],
                ),
            )
        await orders.report(
            "nat",
            ipb.ImageReport(
                audit=True,
                piece_lists=[ipb.PieceList(image_id="img", sha256="0" * 64, pieces=listed)],
            ),
        )
        kv = await store.get(keys.piece_report("src", "img"))
        assert kv is not None and json.loads(kv.value)["sha256"] == SHA
        assert await store.get(keys.piece_report("a", "img")) is None, "not the source"
        assert await store.get(keys.piece_report("nat", "img")) is None
        a = orders.attach("a")
        held = Replica(IMG.id, SiteId("src")).queue().start(source="src").verify().activate(1)
        await put_replica(store, held)
        await put_replica(store, Replica(IMG.id, SiteId("nat")).queue())
        await put_replica(store, Replica(IMG.id, SiteId("b")).queue())
        await put_replica(
            store, Replica(IMG.id, SiteId("a")).queue().start(source="src", swarm=True)
        )
        await asyncio.sleep(0.05)
        assert a.empty(), "no order before the catalog's piece list"
        await store.put(keys.image_pieces("img"), listed.encode())
        await until(lambda: a.qsize() == 1, "the swarm order")
        order = a.get_nowait()
        assert order.swarm and pieces.Manifest.from_dict(json.loads(order.pieces)) == manifest
        assert {(p.site, p.address) for p in order.peers} == {("src", "src:7500"), ("b", "b:7500")}
        now = int(time.time() * 1000)
        for p in order.peers:
            ok = grant.refusal(
                p.grant,
                key.public_key(),
                image="img",
                source=p.site,
                caller="a",
                now_ms=now,
                pieces=manifest.digest(),
            )
            assert ok is None, ok
    finally:
        task.cancel()


async def test_a_restarted_replica_orders_a_swarm_with_every_peer_in_the_catalog() -> None:
    """The catalog is listed key by key (``img/a`` before ``img/src``): a destination
    already attached is ordered once the whole listing is read, the source among its
    peers -- not at its own record, before the source's was read."""
    from replication import grant, pieces

    store = MemoryStore()
    listed = json.dumps(pieces.manifest_of(b"x", 1 << 20).to_dict())
    await store.put(keys.image("img"), Entry(IMG).encode())
    await store.put(keys.image_pieces("img"), listed.encode())
    await put_replica(store, Replica(IMG.id, SiteId("a")).queue().start(source="src", swarm=True))
    held = Replica(IMG.id, SiteId("src")).queue().start(source="src").verify().activate(1)
    await put_replica(store, held)
    orders = ImageOrders(store, signer=grant.Ed25519PrivateKey.generate(), grant_ttl=60)
    for site in ("src", "a"):
        await orders.report(site, ipb.ImageReport(audit=True, direct_address=f"{site}:7500"))
    a = orders.attach("a")  # the agent's call arrived before the replica read the catalog
    orders._pieces["img"] = (listed, pieces.Manifest.from_dict(json.loads(listed)).digest())
    task = asyncio.create_task(orders.run())
    try:
        await until(lambda: a.qsize() >= 1, "the swarm order")
        await asyncio.sleep(0.05)
        order = a.get_nowait()
        assert [p.site for p in order.peers] == ["src"], "the source is a peer"
        assert a.empty(), "one order per attempt"
    finally:
        task.cancel()
