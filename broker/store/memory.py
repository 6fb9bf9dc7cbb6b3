"""An in-memory ``Store`` with etcd's semantics, for unit tests (our own seam's fake).

It keeps the same contract as ``EtcdStore`` -- one global revision, create/mod revision
and version per key, leases whose expiry deletes their keys in one revision, atomic
transactions, watches in revision order with history from ``start_revision`` -- so a test
that passes here means the same on etcd (``tests/unit/broker/store/test_contract.py``
runs one suite against both). It serves invariant 1 in tests: code under test keeps its
state here exactly as it would in etcd, and nowhere else.

Pure asyncio, no threads: lease expiry runs on loop timers (``time.monotonic`` deadlines,
also checked on every call). Test hooks: ``expire_lease`` ends a lease now, and
``set_unavailable`` makes every call (and every open watch) fail with
``StoreUnavailable`` until switched back.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from broker import errors
from broker.store import protocol as p

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops


@dataclass(slots=True)
class _Entry:
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(slots=True)
class _LeaseState:
    ttl: int
    deadline: float
    keys: set[str] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True, eq=False)
class _Watcher:
    prefix: str
    queue: asyncio.Queue[p.WatchEvent | errors.StoreUnavailable]


def _compare_ok(compare: p.Compare, entry: _Entry | None) -> bool:
    if compare.target is p.Target.VALUE:
        if not isinstance(compare.value, bytes):
            raise TypeError(f"compare on VALUE of {compare.key} needs bytes")
        if entry is None:  # etcd: a value compare on a missing key is always false
            return False
        have: int | bytes = entry.value
    else:
        if isinstance(compare.value, bytes) or not isinstance(compare.value, int):
            raise TypeError(f"compare on {compare.target.name} of {compare.key} needs an int")
        if entry is None:
            have = 0
        elif compare.target is p.Target.CREATE:
            have = entry.create_revision
        elif compare.target is p.Target.MOD:
            have = entry.mod_revision
        else:
            have = entry.version
    want = compare.value
    if compare.op is p.Op.EQUAL:
        return have == want
    if compare.op is p.Op.NOT_EQUAL:
        return have != want
    if compare.op is p.Op.LESS:
        return have < want  # type: ignore[operator]  # same type, checked above
    return have > want  # type: ignore[operator]


def _matches(key: str, op_key: str, prefix: bool) -> bool:
    return key.startswith(op_key) if prefix else key == op_key


class MemoryStore:
    """``Store`` in a dict. ``min_lease_ttl`` mirrors etcd's minimum (2 s by default)."""

    def __init__(self, *, min_lease_ttl: int = 2) -> None:
        self._data: dict[str, _Entry] = {}
        self._revision = 1  # a fresh etcd cluster starts at revision 1
        self._history: list[p.WatchEvent] = []
        self._leases: dict[int, _LeaseState] = {}
        self._lease_ids = itertools.count(0x3A5C_0000_0001)
        self._watchers: set[_Watcher] = set()
        self._min_lease_ttl = min_lease_ttl
        self._closed = False
        self._unavailable = False
        self._compacted = 0

    # -- test hooks ---------------------------------------------------------------------

    def expire_lease(self, lease_id: int) -> None:
        """End a lease now, as if its TTL ran out (its keys go, in one revision)."""
        self._end_lease(lease_id)

    def set_unavailable(self, unavailable: bool = True) -> None:
        """Make every call fail with ``StoreUnavailable`` (and break open watches)."""
        self._unavailable = unavailable
        if unavailable:
            self._break_watches("etcd is unavailable (MemoryStore.set_unavailable)")

    async def compact(self, revision: int) -> None:
        """Forget the history before ``revision``, as etcd's compaction does: a watch from
        an older revision then fails with ``StoreUnavailable`` (open watches go on)."""
        self._compacted = max(self._compacted, revision)
        self._history = [e for e in self._history if e.mod_revision >= revision]

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def active_watches(self) -> int:
        return len(self._watchers)

    # -- plumbing -----------------------------------------------------------------------

    def _check(self, what: str) -> None:
        if self._closed:
            raise errors.StoreUnavailable(f"{what}: the store is closed", retry_after=0.0)
        if self._unavailable:
            raise errors.StoreUnavailable(f"{what}: etcd is unavailable")
        self._expire_due()

    def _expire_due(self) -> None:
        now = time.monotonic()
        for lease_id in [i for i, state in self._leases.items() if state.deadline <= now]:
            self._end_lease(lease_id)

    def _end_lease(self, lease_id: int) -> None:
        state = self._leases.pop(lease_id, None)
        if state is None:
            return
        if state.timer is not None:
            state.timer.cancel()
        if state.keys:
            self._commit([p.Delete(key) for key in sorted(state.keys)])

    def _kv(self, key: str, entry: _Entry) -> p.KeyValue:
        return p.KeyValue(
            key, entry.value, entry.create_revision, entry.mod_revision, entry.version, entry.lease
        )

    def _range(self, key: str, prefix: bool) -> tuple[p.KeyValue, ...]:
        if not prefix:
            entry = self._data.get(key)
            return () if entry is None else (self._kv(key, entry),)
        return tuple(self._kv(k, self._data[k]) for k in sorted(self._data) if k.startswith(key))

    @staticmethod
    def _validate(ops: Sequence[p.TxnOp | p.Compare]) -> None:
        """What etcd refuses in any branch of a request: too many ops, overlapping puts."""
        if len(ops) > MAX_TXN_OPS:
            raise errors.InvalidInput("txn", "too many operations in txn request")
        puts = [op for op in ops if isinstance(op, p.Put)]
        if len({op.key for op in puts}) != len(puts):
            raise errors.InvalidInput("txn", "duplicate key given in txn request")
        deletes = [op for op in ops if isinstance(op, p.Delete)]
        for put in puts:
            if any(_matches(put.key, d.key, d.prefix) for d in deletes):
                raise errors.InvalidInput("txn", "duplicate key given in txn request")

    def _check_leases(self, ops: Sequence[p.TxnOp]) -> None:
        """etcd refuses the branch it runs when a put names a lease that is gone."""
        for op in ops:
            if isinstance(op, p.Put) and op.lease and op.lease not in self._leases:
                raise errors.LeaseExpired(f"put {op.key}: requested lease not found")

    def _commit(self, ops: Sequence[p.TxnOp]) -> tuple[tuple[p.KeyValue, ...], ...]:
        """Apply validated ops at the next revision (taken only if something changed)."""
        revision = self._revision + 1
        events: list[p.WatchEvent] = []
        responses: list[tuple[p.KeyValue, ...]] = []
        for op in ops:
            if isinstance(op, p.Get):
                responses.append(self._range(op.key, op.prefix))
                continue
            responses.append(())
            if isinstance(op, p.Put):
                events.append(self._put(op, revision))
            else:
                events.extend(self._delete(op, revision))
        if events:
            self._revision = revision
            self._history.extend(events)
            self._publish(events)
        return tuple(responses)

    def _put(self, op: p.Put, revision: int) -> p.WatchEvent:
        old = self._data.get(op.key)
        if old is not None and old.lease and old.lease in self._leases:
            self._leases[old.lease].keys.discard(op.key)
        if old is None:
            entry = _Entry(op.value, revision, revision, 1, op.lease)
        else:
            entry = _Entry(op.value, old.create_revision, revision, old.version + 1, op.lease)
        self._data[op.key] = entry
        if op.lease:
            self._leases[op.lease].keys.add(op.key)
        return p.WatchEvent(p.EventType.PUT, op.key, op.value, revision, entry.create_revision)

    def _delete(self, op: p.Delete, revision: int) -> list[p.WatchEvent]:
        keys = [kv.key for kv in self._range(op.key, op.prefix)] if op.prefix else [op.key]
        events = []
        for key in keys:
            entry = self._data.pop(key, None)
            if entry is None:
                continue
            if entry.lease and entry.lease in self._leases:
                self._leases[entry.lease].keys.discard(key)
            events.append(p.WatchEvent(p.EventType.DELETE, key, b"", revision, 0))
        return events

    def _publish(self, events: list[p.WatchEvent]) -> None:
        for watcher in self._watchers:
            for event in events:
                if event.key.startswith(watcher.prefix):
                    watcher.queue.put_nowait(event)

    def _break_watches(self, why: str) -> None:
        for watcher in self._watchers:
            watcher.queue.put_nowait(errors.StoreUnavailable(why, retry_after=0.1))

    # -- keys ---------------------------------------------------------------------------

    async def get(self, key: str) -> p.KeyValue | None:
        self._check(f"get {key}")
        found = self._range(key, prefix=False)
        return found[0] if found else None

    async def get_prefix(self, prefix: str) -> tuple[list[p.KeyValue], int]:
        self._check(f"get prefix {prefix}")
        return list(self._range(prefix, prefix=True)), self._revision

    async def get_range(
        self,
        prefix: str,
        *,
        after: str = "",
        before: str = "",
        limit: int = 0,
        descending: bool = False,
    ) -> tuple[list[p.KeyValue], int, int]:
        self._check(f"get range {prefix}")
        low, high = prefix + after, prefix + before
        found = [
            kv
            for kv in self._range(prefix, prefix=True)
            if (not after or kv.key > low) and (not before or kv.key < high)
        ]
        if descending:
            found.reverse()
        return (found[:limit] if limit else found), self._revision, len(found)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        self._check(f"put {key}")
        op = p.Put(key, value, lease)
        self._check_leases([op])
        self._commit([op])
        return self._revision

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        self._check(f"delete {key}")
        before = len(self._data)
        self._commit([p.Delete(key, prefix)])
        return before - len(self._data)

    async def txn(
        self,
        compares: Sequence[p.Compare],
        success: Sequence[p.TxnOp],
        failure: Sequence[p.TxnOp] = (),
    ) -> p.TxnResult:
        self._check("txn")
        for request in (compares, success, failure):
            self._validate(request)
        results = [_compare_ok(c, self._data.get(c.key)) for c in compares]  # checks all
        succeeded = all(results)
        ops = success if succeeded else failure
        self._check_leases(ops)
        responses = self._commit(ops)
        return p.TxnResult(succeeded, self._revision, responses)

    # -- leases -------------------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> p.Lease:
        self._check("grant lease")
        ttl = max(ttl, self._min_lease_ttl)
        lease_id = next(self._lease_ids)
        self._leases[lease_id] = state = _LeaseState(ttl, time.monotonic() + ttl)
        self._arm(lease_id, state)
        return p.Lease(lease_id, ttl)

    def _arm(self, lease_id: int, state: _LeaseState) -> None:
        if state.timer is not None:
            state.timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, state.deadline - time.monotonic())
        state.timer = loop.call_later(delay, self._expire_due)

    async def refresh_lease(self, lease_id: int) -> int:
        self._check(f"refresh lease {lease_id:x}")
        state = self._leases.get(lease_id)
        if state is None:
            raise errors.LeaseExpired(f"lease {lease_id:x} is gone (expired or revoked)")
        state.deadline = time.monotonic() + state.ttl
        self._arm(lease_id, state)
        return state.ttl

    async def revoke_lease(self, lease_id: int) -> None:
        """Revoke the lease (deleting its keys); a lease already gone is not an error."""
        self._check(f"revoke lease {lease_id:x}")
        self._end_lease(lease_id)

    # -- watches ------------------------------------------------------------------------

    async def watch_prefix(
        self, prefix: str, *, start_revision: int | None = None
    ) -> AsyncGenerator[p.WatchEvent, None]:
        """Events under ``prefix``; see ``Store.watch_prefix``.

        Like ``EtcdStore``, the watch starts when iteration starts (the first
        ``__anext__``); pass ``start_revision`` (a read's revision + 1) to miss nothing.
        """
        self._check(f"watch {prefix}")
        watcher = _Watcher(prefix, asyncio.Queue())
        if start_revision is not None and start_revision < self._compacted:
            raise errors.StoreUnavailable(
                f"watch {prefix}: revision compacted up to {self._compacted}; re-list",
                retry_after=0.0,
            )
        if start_revision is not None:
            first = bisect.bisect_left(self._history, start_revision, key=lambda e: e.mod_revision)
            for event in self._history[first:]:
                if event.key.startswith(prefix):
                    watcher.queue.put_nowait(event)
        self._watchers.add(watcher)
        try:
            while True:
                item = await watcher.queue.get()
                if isinstance(item, errors.StoreUnavailable):
                    raise item
                yield item
        finally:
            self._watchers.discard(watcher)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for state in self._leases.values():
            if state.timer is not None:
                state.timer.cancel()
        self._break_watches("the store is closed")
