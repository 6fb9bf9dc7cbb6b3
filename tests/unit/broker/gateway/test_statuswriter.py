"""A stream's StatusWriter: what the reader queued lands, in transactions etcd takes,
and nothing leaves the queue before it is written."""

from __future__ import annotations

import asyncio

from broker.gateway import statuswriter
from broker.store import keys
from broker.store.memory import MemoryStore
from broker.store.protocol import Compare, Op, Put, Target


async def test_a_backlog_beyond_one_transaction_is_written_in_batches(
    memory_store: MemoryStore,
) -> None:
    writer = statuswriter.StatusWriter(memory_store)
    memory_store.set_unavailable()
    for i in range(300):  # more than etcd's 128 operations per transaction
        writer.add(f"observed/s/server/vm{i:03d}", b"v1")
    assert not await writer.write_once()  # etcd unreachable: everything stays queued
    assert len(writer.pending) == 300
    memory_store.set_unavailable(False)
    task = asyncio.create_task(writer.run())
    try:
        for _ in range(500):
            if not writer.pending:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert not writer.pending
    found, _ = await memory_store.get_prefix("observed/s/server/")
    assert len(found) == 300 and writer.txns == 3


async def test_a_status_replaced_while_written_stays_queued(memory_store: MemoryStore) -> None:
    writer = statuswriter.StatusWriter(memory_store)
    writer.add("observed/s/server/vm", b"old")
    real_txn = memory_store.txn

    async def txn(*args, **kwargs):  # type: ignore[no-untyped-def]
        writer.add("observed/s/server/vm", b"new")  # the reader goes on meanwhile
        return await real_txn(*args, **kwargs)

    memory_store.txn = txn  # type: ignore[method-assign]
    assert await writer.write_once()
    assert writer.pending == {"observed/s/server/vm": b"new"}
    memory_store.txn = real_txn  # type: ignore[method-assign]
    await writer.close()
    kv = await memory_store.get("observed/s/server/vm")
    assert kv is not None and kv.value == b"new" and not writer.pending


async def test_a_superseded_stream_keeps_its_events_and_drops_its_stale_statuses(
    memory_store: MemoryStore,
) -> None:
    site_record = keys.sitestatus("s")
    await memory_store.txn([], [Put(site_record, b"session-2")])  # a newer session's record
    await memory_store.txn([], [Put("observed/s/server/vm", b"new")])  # what it reported
    writer = statuswriter.StatusWriter(memory_store)
    writer.add("observed/s/server/vm", b"old")
    writer.add(keys.event("e1"), b"event")
    await writer.close(Compare(site_record, Target.VALUE, Op.EQUAL, b"session-1"))
    kv = await memory_store.get("observed/s/server/vm")
    assert kv is not None and kv.value == b"new"  # never overwritten by the stale stream
    event = await memory_store.get(keys.event("e1"))
    assert event is not None and event.value == b"event"
    assert not writer.pending


async def test_a_closing_stream_that_still_owns_its_site_writes_everything(
    memory_store: MemoryStore,
) -> None:
    site_record = keys.sitestatus("s")
    await memory_store.txn([], [Put(site_record, b"session-1")])
    writer = statuswriter.StatusWriter(memory_store)
    writer.add("observed/s/server/vm", b"last")
    await writer.close(Compare(site_record, Target.VALUE, Op.EQUAL, b"session-1"))
    kv = await memory_store.get("observed/s/server/vm")
    assert kv is not None and kv.value == b"last"
