"""A replaced replica lease: the records it took are owed until written, whatever etcd
does meanwhile (heartbeats write nothing, so nothing else would bring them back)."""

from __future__ import annotations

import pytest

from broker import errors
from broker.gateway import liveness
from broker.gateway.feeds import ReplicaLease
from broker.gateway.sessions import Registry, Session
from broker.models import codec
from broker.models.site import SiteStatus
from broker.settings import BrokerSettings
from broker.store import keys
from broker.store.memory import MemoryStore


def session(site: str) -> Session:
    return Session(site, f"sess-{site}", 1, "1.2", "test", liveness.now_ms())


async def held(
    store: MemoryStore, lease: ReplicaLease, *sites: str
) -> tuple[liveness.Liveness, Registry]:
    """A replica's liveness holding a session of each of ``sites``, their records written."""
    registry = Registry()
    cleared: list[Session] = []

    async def clear(s: Session) -> None:
        cleared.append(s)

    live = liveness.Liveness(store, BrokerSettings(name="r1"), registry, lease, clear)
    lease.on_renewed(live.owe_records)
    for site in sites:
        s = session(site)
        registry.add(s)
        live.track(s)
        s.status_value = liveness.record(s, "r1")
        await store.put(keys.sitestatus(site), s.status_value, lease=await lease.id())
    return live, registry


async def test_owed_records_survive_a_failed_first_attempt(memory_store: MemoryStore) -> None:
    lease = ReplicaLease(memory_store, ttl=10)
    live, _ = await held(memory_store, lease, "site-a", "site-b")
    first = await lease.id()
    memory_store.expire_lease(first)  # the records go with it
    assert await memory_store.get(keys.sitestatus("site-a")) is None
    lease.expired(first)
    await live.owe_records(await lease.id())
    assert len(live.owed) == 2
    memory_store.set_unavailable()  # etcd still waking up: the first try fails
    with pytest.raises(errors.StoreUnavailable):
        await live.sweep()
    assert len(live.owed) == 2, "a failed attempt must leave the records owed"
    memory_store.set_unavailable(False)
    await live.sweep()
    assert not live.owed
    for site in ("site-a", "site-b"):
        kv = await memory_store.get(keys.sitestatus(site))
        assert kv is not None and kv.lease == await lease.id() != first
    await lease.revoke()


async def test_a_newer_record_is_not_overwritten(memory_store: MemoryStore) -> None:
    lease = ReplicaLease(memory_store, ttl=10)
    live, registry = await held(memory_store, lease, "site-a")
    live.owed.update(registry.all())
    await memory_store.put(keys.sitestatus("site-a"), b"newer")
    await live.sweep()
    kv = await memory_store.get(keys.sitestatus("site-a"))
    assert kv is not None and kv.value == b"newer" and not live.owed
    await lease.revoke()


async def test_a_closed_session_is_no_longer_owed(memory_store: MemoryStore) -> None:
    lease = ReplicaLease(memory_store, ttl=10)
    live, registry = await held(memory_store, lease, "site-a")
    [s] = registry.all()
    memory_store.expire_lease(await lease.id())
    live.owed.add(s)
    s.close("agent went away")
    await live.sweep()
    assert not live.owed and await memory_store.get(keys.sitestatus("site-a")) is None
    await lease.revoke()


async def test_a_stale_sessions_flip_never_overwrites_a_newer_sessions_record(
    memory_store: MemoryStore,
) -> None:
    """The agent gave up on a frozen replica and opened a newer session elsewhere: when
    the frozen replica wakes, its stale session looks silent, but its flip must leave the
    newer record alone (the site would stay DOWN under a live agent); it is closed."""
    lease = ReplicaLease(memory_store, ttl=10)
    live, registry = await held(memory_store, lease, "site-a", "site-b")
    stale = registry.get("site-a")
    assert stale is not None
    newer = codec.encode(SiteStatus("site-a", "r2", "newer", "1.2", "test", 2, 2))
    await memory_store.put(keys.sitestatus("site-a"), newer)  # the other replica's session
    for s in registry.all():
        s.last_seen -= 3600  # both look silent to this replica
    await live.sweep()
    kv = await memory_store.get(keys.sitestatus("site-a"))
    assert kv is not None and kv.value == newer, "a stale session overwrote a newer record"
    assert stale.closed_reason.startswith("superseded")
    b = await memory_store.get(keys.sitestatus("site-b"))
    assert b is not None and codec.decode(SiteStatus, b.value).silent_since_ms > 0
    await lease.revoke()


async def test_two_sessions_of_one_site_flip_in_one_sweep(memory_store: MemoryStore) -> None:
    """A stale session not closed yet and the agent's newer one on the same replica, both
    silent: one sweep writes both flips without putting the site's key twice in one
    transaction (etcd refuses that, and the liveness task used to die of it)."""
    lease = ReplicaLease(memory_store, ttl=10)
    live, registry = await held(memory_store, lease, "site-a", "site-b")
    stale = registry.get("site-a")
    assert stale is not None
    newer = session("site-a")
    newer.session_id = "sess-site-a-2"
    live.track(newer)
    newer.status_value = liveness.record(newer, "r1")
    for s in (stale, newer, registry.get("site-b")):
        assert s is not None
        s.last_seen -= 3600
    await live.sweep()  # no InvalidInput: no key twice in one transaction
    kv = await memory_store.get(keys.sitestatus("site-a"))
    assert kv is not None and codec.decode(SiteStatus, kv.value).silent_since_ms > 0
    # the session whose record it is wrote its flip; the other one is closed, not written
    assert stale.silent and newer.closed_reason.startswith("superseded")
    await lease.revoke()


async def test_a_closed_sessions_record_etcd_did_not_delete_is_deleted_later(
    memory_store: MemoryStore,
) -> None:
    """The replica lives, so its lease never takes the record: without the retry the
    leader would keep the site UP under no stream at all."""
    lease = ReplicaLease(memory_store, ttl=10)
    live, registry = await held(memory_store, lease, "site-a", "site-b")
    a, b = sorted(registry.all(), key=lambda s: s.site)
    live.owe_clear(a)
    live.owe_clear(b)
    await memory_store.put(keys.sitestatus("site-b"), b"a newer session's record")
    memory_store.set_unavailable()
    with pytest.raises(errors.StoreUnavailable):
        await live.sweep()
    assert set(live.uncleared) == {keys.sitestatus("site-a"), keys.sitestatus("site-b")}
    memory_store.set_unavailable(False)
    await live.sweep()
    assert not live.uncleared
    assert await memory_store.get(keys.sitestatus("site-a")) is None
    kv = await memory_store.get(keys.sitestatus("site-b"))
    assert kv is not None and kv.value == b"a newer session's record"
    await lease.revoke()
