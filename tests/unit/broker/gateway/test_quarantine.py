"""A live drill's quarantine at the gateway (``isolate: site``): the site's open stream is
closed with a farewell naming the drill, new streams are refused until the key goes, and
a re-listing forgets what etcd no longer holds (issue 11)."""

from __future__ import annotations

import asyncio
import contextlib
import json

from meridian.v1 import agent_pb2 as pb

from broker.gateway.quarantine import Quarantines
from broker.gateway.sessions import Registry, Session
from broker.store import follow, keys
from broker.store.memory import MemoryStore


def session(site: str) -> Session:
    return Session(site, f"{site}-1", 1, "1.1", "test", 0)


async def test_quarantine_closes_refuses_and_lifts(memory_store: MemoryStore) -> None:
    registry = Registry()
    held, other = session("s1"), session("s2")
    registry.add(held)
    registry.add(other)
    q = Quarantines(memory_store, registry)
    task = asyncio.create_task(q.run())
    try:
        value = json.dumps({"drill": "drill-7"}).encode()
        await memory_store.put(keys.drill_quarantine("s1"), value)
        for _ in range(100):
            if held.closed_reason:
                break
            await asyncio.sleep(0.01)
        assert "quarantined by live drill drill-7" in held.closed_reason
        farewell = held.outbound.get_nowait()
        assert farewell is not None and farewell.refusal.code == pb.REFUSAL_UNAVAILABLE
        assert "meridian drill abort drill-7" in farewell.refusal.reason
        assert not other.closed_reason and q.reason("s2") == ""
        assert "drill-7" in q.reason("s1"), "a new stream of s1 is refused"
        await memory_store.delete(keys.drill_quarantine("s1"))
        for _ in range(100):
            if not q.reason("s1"):
                break
            await asyncio.sleep(0.01)
        assert q.reason("s1") == "", "lifted with the key"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_a_relisting_forgets_quarantines_etcd_no_longer_holds() -> None:
    q = Quarantines(MemoryStore(), Registry())
    q.sites = {"s1": "d1", "s2": "d1"}
    kept = frozenset({keys.drill_quarantine("s2")})
    q.take(follow.Listed(keys.DRILL_QUARANTINE, 5, kept))
    assert q.sites == {"s2": "d1"}
