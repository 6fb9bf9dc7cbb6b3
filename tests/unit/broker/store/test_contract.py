"""The Store contract: one suite, run against MemoryStore and a real etcd (``store``).

If the fake and etcd ever disagree, a test here fails for one of them. Revisions are
global on the shared etcd, so tests compare revisions relative to each other, never to
constants.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable

import pytest

from broker import errors
from broker.store.protocol import (
    Compare,
    Delete,
    EventType,
    Get,
    KeyValue,
    Op,
    Put,
    Store,
    Target,
    WatchEvent,
)

T, O = Target, Op  # noqa: E741 - short names keep the compare table readable


async def take(
    watch: AsyncIterator[WatchEvent], count: int, within: float = 10.0
) -> list[WatchEvent]:
    """The next ``count`` events (a timeout here is a failure, not a wait)."""

    async def collect() -> list[WatchEvent]:
        return [await anext(watch) for _ in range(count)]

    return await asyncio.wait_for(collect(), within)


async def aclose(watch: AsyncIterator[WatchEvent]) -> None:
    await watch.aclose()  # type: ignore[attr-defined]


async def eventually(check: Callable[[], object], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.02)


# -- keys ---------------------------------------------------------------------------------


async def test_put_get_update_and_revisions(store: Store) -> None:
    assert await store.get("sites/a") is None
    first = await store.put("sites/a", b"one")
    kv = await store.get("sites/a")
    assert kv == KeyValue("sites/a", b"one", first, first, 1, 0)
    second = await store.put("sites/a", b"two")
    assert second > first
    kv = await store.get("sites/a")
    assert kv == KeyValue("sites/a", b"two", first, second, 2, 0)


async def test_delete_counts_and_recreate_resets_version(store: Store) -> None:
    await store.put("k", b"1")
    await store.put("k", b"2")
    assert await store.delete("k") == 1
    assert await store.delete("k") == 0
    assert await store.get("k") is None
    again = await store.put("k", b"3")
    assert await store.get("k") == KeyValue("k", b"3", again, again, 1, 0)


async def test_prefix_get_is_sorted_and_exact_and_delete_prefix(store: Store) -> None:
    for key in ("a/c", "a/a", "ab", "a/b", "b/a"):
        last = await store.put(key, key.encode())
    kvs, revision = await store.get_prefix("a/")
    assert [kv.key for kv in kvs] == ["a/a", "a/b", "a/c"]
    assert [kv.value for kv in kvs] == [b"a/a", b"a/b", b"a/c"]
    assert revision >= last
    assert await store.delete("a/", prefix=True) == 3
    kvs, _ = await store.get_prefix("a")
    assert [kv.key for kv in kvs] == ["ab"]
    assert (await store.get_prefix("nothing/"))[0] == []


async def test_range_pages_bounds_order_and_count(store: Store) -> None:
    for key in ("r/b", "r/d", "r/a", "r/c", "r/e", "rz", "q/a"):
        last = await store.put(key, key.encode())
    kvs, revision, total = await store.get_range("r/", limit=2)
    assert [kv.key for kv in kvs] == ["r/a", "r/b"] and total == 5 and revision >= last
    kvs, _, total = await store.get_range("r/", after="b", limit=2)
    assert [kv.key for kv in kvs] == ["r/c", "r/d"] and total == 3
    kvs, _, total = await store.get_range("r/", after="a", before="d")
    assert [kv.key for kv in kvs] == ["r/b", "r/c"] and total == 2
    kvs, _, total = await store.get_range("r/", before="e", limit=2, descending=True)
    assert [kv.key for kv in kvs] == ["r/d", "r/c"] and total == 4
    assert [kv.value for kv in kvs] == [b"r/d", b"r/c"]
    assert (await store.get_range("r/", after="e"))[0] == []
    assert (await store.get_range("nothing/", limit=1))[2] == 0


async def test_a_listing_larger_than_one_grpc_message_is_read_whole(store: Store) -> None:
    """observed/ of 1,000 VNFs is ~5.5 MB: a new leader listing it got RESOURCE_EXHAUSTED
    (gRPC's 4 MiB message bound) and re-listed forever. A listing is read in pages, all
    at the revision of the first, so it is still one consistent snapshot."""
    value = b"x" * (128 * 1024)
    written = [await store.put(f"big/{i:03d}", value) for i in range(48)]  # 6 MiB in all
    before = await store.put("big/zz-last", b"")
    kvs, revision = await store.get_prefix("big/")
    assert [kv.key for kv in kvs] == [*(f"big/{i:03d}" for i in range(48)), "big/zz-last"]
    assert all(kv.value == value for kv in kvs[:48]) and revision >= before
    watch = store.watch_prefix("big/", start_revision=written[0])
    try:  # a watch catching up over more than 4 MiB of events gets them all too
        events = await take(watch, 49)
    finally:
        await aclose(watch)
    assert [e.key for e in events][-1] == "big/zz-last"


# -- transactions -------------------------------------------------------------------------

# Key "k" is created at revision C with b"m", then updated at revision M (version 2).
# Each row: target, op, the value to compare with (C/M resolved at run time), outcome.
COMPARES = [
    (T.VALUE, O.EQUAL, b"m", True),
    (T.VALUE, O.EQUAL, b"x", False),
    (T.VALUE, O.NOT_EQUAL, b"x", True),
    (T.VALUE, O.NOT_EQUAL, b"m", False),
    (T.VALUE, O.LESS, b"n", True),
    (T.VALUE, O.LESS, b"m", False),
    (T.VALUE, O.GREATER, b"l", True),
    (T.VALUE, O.GREATER, b"z", False),
    (T.CREATE, O.EQUAL, "C", True),
    (T.CREATE, O.EQUAL, "M", False),
    (T.CREATE, O.NOT_EQUAL, 0, True),
    (T.CREATE, O.LESS, "M", True),
    (T.CREATE, O.GREATER, "C", False),
    (T.MOD, O.EQUAL, "M", True),
    (T.MOD, O.EQUAL, "C", False),
    (T.MOD, O.NOT_EQUAL, "M", False),
    (T.MOD, O.GREATER, "C", True),
    (T.MOD, O.LESS, "M", False),
    (T.VERSION, O.EQUAL, 2, True),
    (T.VERSION, O.EQUAL, 1, False),
    (T.VERSION, O.NOT_EQUAL, 2, False),
    (T.VERSION, O.GREATER, 1, True),
    (T.VERSION, O.LESS, 2, False),
    (T.VERSION, O.LESS, 3, True),
]


@pytest.mark.parametrize(("target", "op", "value", "holds"), COMPARES)
async def test_compare_on_existing_key(
    store: Store, target: Target, op: Op, value: object, holds: bool
) -> None:
    created = await store.put("k", b"l")
    modified = await store.put("k", b"m")
    resolved = {"C": created, "M": modified}.get(value, value) if isinstance(value, str) else value
    assert isinstance(resolved, int | bytes)
    result = await store.txn(
        [Compare("k", target, op, resolved)], [Put("yes", b"1")], [Put("no", b"1")]
    )
    assert result.succeeded is holds
    assert (await store.get("yes" if holds else "no")) is not None
    assert (await store.get("no" if holds else "yes")) is None


ABSENT = [
    (T.CREATE, O.EQUAL, 0, True),
    (T.CREATE, O.GREATER, 0, False),
    (T.MOD, O.EQUAL, 0, True),
    (T.VERSION, O.EQUAL, 0, True),
    (T.VERSION, O.LESS, 1, True),
    # etcd: a VALUE compare on a missing key is false whatever the op
    (T.VALUE, O.EQUAL, b"", False),
    (T.VALUE, O.NOT_EQUAL, b"x", False),
    (T.VALUE, O.GREATER, b"", False),
]


@pytest.mark.parametrize(("target", "op", "value", "holds"), ABSENT)
async def test_compare_on_missing_key(
    store: Store, target: Target, op: Op, value: int | bytes, holds: bool
) -> None:
    result = await store.txn([Compare("missing", target, op, value)], [Put("yes", b"1")])
    assert result.succeeded is holds
    assert (await store.get("yes") is not None) is holds


async def test_txn_is_one_revision_and_reads_its_own_writes(store: Store) -> None:
    await store.put("old", b"x")
    await store.put("dir/2", b"2")
    result = await store.txn(
        [Compare("a", T.CREATE, O.EQUAL, 0)],
        [Put("a", b"A"), Put("dir/1", b"1"), Delete("old"), Get("a"), Get("dir/", prefix=True)],
    )
    assert result.succeeded
    a = await store.get("a")
    d1 = await store.get("dir/1")
    assert a is not None and d1 is not None
    assert a.mod_revision == d1.mod_revision == result.revision
    assert await store.get("old") is None
    assert result.responses[:3] == ((), (), ())
    assert result.responses[3] == (a,)
    assert [kv.key for kv in result.responses[4]] == ["dir/1", "dir/2"]


async def test_txn_failure_branch_and_read_only_revision(store: Store) -> None:
    written = await store.put("a", b"A")
    result = await store.txn(
        [Compare("a", T.VALUE, O.EQUAL, b"B")], [Put("a", b"B")], [Get("a"), Get("none")]
    )
    assert not result.succeeded
    assert result.revision >= written
    kv = await store.get("a")
    assert kv is not None and kv.value == b"A" and kv.mod_revision == written
    assert result.responses == ((kv,), ())


async def test_txn_is_atomic_when_a_put_names_a_dead_lease(store: Store) -> None:
    lease = await store.grant_lease(5)
    await store.revoke_lease(lease.id)
    with pytest.raises(errors.LeaseExpired):
        await store.txn([], [Put("first", b"1"), Put("second", b"2", lease=lease.id)])
    assert await store.get("first") is None
    with pytest.raises(errors.LeaseExpired):
        await store.put("third", b"3", lease=lease.id)


async def test_txn_refuses_two_puts_of_one_key(store: Store) -> None:
    with pytest.raises(errors.InvalidInput):
        await store.txn([], [Put("k", b"1"), Put("k", b"2")])
    assert await store.get("k") is None


async def test_compare_value_types_are_checked(store: Store) -> None:
    with pytest.raises(TypeError):
        await store.txn([Compare("k", T.VALUE, O.EQUAL, 1)], [])
    with pytest.raises(TypeError):
        await store.txn([Compare("k", T.MOD, O.EQUAL, b"1")], [])


# -- leases -------------------------------------------------------------------------------


async def test_lease_grant_attach_refresh_revoke(store: Store) -> None:
    lease = await store.grant_lease(30)
    assert lease.id != 0 and lease.ttl >= 30
    await store.put("leased/a", b"a", lease=lease.id)
    await store.put("leased/b", b"b", lease=lease.id)
    await store.put("kept", b"k")
    kv = await store.get("leased/a")
    assert kv is not None and kv.lease == lease.id
    assert 0 < await store.refresh_lease(lease.id) <= lease.ttl
    await store.revoke_lease(lease.id)
    assert (await store.get_prefix("leased/"))[0] == []
    assert await store.get("kept") is not None
    with pytest.raises(errors.LeaseExpired):
        await store.refresh_lease(lease.id)
    await store.revoke_lease(lease.id)  # revoking a gone lease is not an error


async def test_put_without_lease_detaches_the_key(store: Store) -> None:
    lease = await store.grant_lease(30)
    await store.put("k", b"1", lease=lease.id)
    await store.put("k", b"2")
    await store.revoke_lease(lease.id)
    kv = await store.get("k")
    assert kv is not None and kv.value == b"2" and kv.lease == 0


async def test_lease_expiry_deletes_its_keys_in_one_revision(store: Store) -> None:
    kvs, revision = await store.get_prefix("x")
    assert kvs == []
    lease = await store.grant_lease(1)  # both raise it to etcd's minimum (2 s here)
    assert lease.ttl >= 1
    await store.put("exp/a", b"a", lease=lease.id)
    await store.put("exp/b", b"b", lease=lease.id)
    watch = store.watch_prefix("exp/", start_revision=revision + 1)
    try:
        events = await take(watch, 4, within=15.0)
    finally:
        await aclose(watch)
    assert [(e.type, e.key) for e in events] == [
        (EventType.PUT, "exp/a"),
        (EventType.PUT, "exp/b"),
        (EventType.DELETE, "exp/a"),
        (EventType.DELETE, "exp/b"),
    ]
    assert events[2].mod_revision == events[3].mod_revision > events[1].mod_revision
    assert (await store.get_prefix("exp/"))[0] == []
    with pytest.raises(errors.LeaseExpired):
        await store.refresh_lease(lease.id)


# -- watches ------------------------------------------------------------------------------


async def test_watch_delivers_in_revision_order_under_the_prefix_only(store: Store) -> None:
    _, revision = await store.get_prefix("w/")
    watch = store.watch_prefix("w/", start_revision=revision + 1)
    try:
        first = await store.put("w/a", b"1")
        await store.put("other/a", b"x")
        await store.put("w/b", b"2")
        await store.put("w/a", b"3")
        await store.delete("w/b")
        await store.txn([], [Put("w/c", b"4"), Delete("w/a")])
        events = await take(watch, 6)
    finally:
        await aclose(watch)
    assert [(e.type, e.key, e.value) for e in events] == [
        (EventType.PUT, "w/a", b"1"),
        (EventType.PUT, "w/b", b"2"),
        (EventType.PUT, "w/a", b"3"),
        (EventType.DELETE, "w/b", b""),
        (EventType.PUT, "w/c", b"4"),
        (EventType.DELETE, "w/a", b""),
    ]
    revisions = [e.mod_revision for e in events]
    assert revisions == sorted(revisions) and revisions[0] == first
    assert events[4].mod_revision == events[5].mod_revision  # one txn, one revision
    assert events[2].create_revision == first  # an update keeps the create revision
    assert events[3].create_revision == 0


async def test_watch_from_a_past_revision_replays_history(store: Store) -> None:
    r1 = await store.put("h/a", b"1")
    r2 = await store.put("h/b", b"2")
    await store.delete("h/a")
    watch = store.watch_prefix("h/", start_revision=r2)
    try:
        replayed = await take(watch, 2)
        live = await store.put("h/c", b"3")
        (later,) = await take(watch, 1)
    finally:
        await aclose(watch)
    assert [(e.type, e.key) for e in replayed] == [
        (EventType.PUT, "h/b"),
        (EventType.DELETE, "h/a"),
    ]
    assert replayed[0].mod_revision == r2 > r1
    assert later.key == "h/c" and later.mod_revision == live


async def test_closing_a_watch_cancels_it(store: Store) -> None:
    _, revision = await store.get_prefix("c/")
    watch = store.watch_prefix("c/", start_revision=revision + 1)
    await store.put("c/a", b"1")
    assert (await take(watch, 1))[0].key == "c/a"
    assert store.active_watches == 1  # type: ignore[attr-defined]
    await aclose(watch)
    assert store.active_watches == 0  # type: ignore[attr-defined]
    with pytest.raises(StopAsyncIteration):
        await anext(watch)
    await store.put("c/b", b"2")  # the store carries on


async def test_breaking_out_of_a_watch_cancels_it(store: Store) -> None:
    _, revision = await store.get_prefix("c/")
    await store.put("c/a", b"1")

    async def first_key() -> str:
        async for event in store.watch_prefix("c/", start_revision=revision + 1):
            return event.key
        raise AssertionError("the watch ended")

    assert await asyncio.wait_for(first_key(), 10) == "c/a"
    gc.collect()
    await eventually(lambda: store.active_watches == 0)  # type: ignore[attr-defined]


async def test_closed_store_refuses_calls(store: Store) -> None:
    await store.close()
    with pytest.raises(errors.StoreUnavailable):
        await store.get("k")
    with pytest.raises(errors.StoreUnavailable):
        await store.put("k", b"v")
