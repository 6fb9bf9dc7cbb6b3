"""The quota ledger: reserve, commit and release against a tenant's global quota.

Invariant 7 (no oversubscription) is kept here: a reservation lands only in a store
transaction whose conditions prove that what admission looked at — the tenant's
committed usage, every live hold, its limits and its quota class — is still current.

The keys it uses are described in ``quota.layout``; ``seq/<tenant>`` is the CAS point.

Expiry: a hold rides on a lease, so a requester that crashes cannot leak quota — etcd
deletes the hold when the lease ends, by its own clock, at a revision of its own, with
no sweeper to run or fence. Leases are shared: one per (ttl, window of ttl/10 s) per
replica, so a hold lives between ``ttl`` and ``ttl * 1.1`` seconds (at least 1 s more)
and a lease grant costs nothing per reservation. Expiry only ever removes holds, so it
never needs to touch ``seq``; a replica that still counts an expired hold refuses too
much, never too little.

Refusals: a refusal writes nothing, so nothing would make a replica re-read a limit
another replica raised (or a hold that expired, or usage given back). A reservation is
therefore refused only on a view read in the same attempt: a refusal from the cache
re-reads the tenant once and plans again.

Hot tenants: each replica group-commits. Requests queue; a flusher takes every queued
request of tenants not already in flight (up to the 128-op limit), applies admission to
them in order against its cached view, and writes them all in ONE transaction that
compares ``seq`` (and the class). So one replica has at most one transaction in flight
per tenant, however many requesters hammer it, and contention happens only between
replicas; a lost compare costs one re-read of the tenant and one retry of the batch.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from quota import errors, kv
from quota.layout import (
    TenantView,
    class_key,
    ledger_key,
    limits_key,
    seq_key,
    tenant_reads,
    view_from,
)
from quota.models import (
    Counts,
    Reservation,
    ReservationId,
    Settled,
    TenantId,
    TenantQuota,
    from_json,
    reservation_id,
    to_json,
)
from quota.planning import Request, TenantPlan

MIN_TTL = 2  # etcd's minimum lease TTL with default raft timing
MAX_TTL = 86_400
DONE_TTL = 3_600
"""Seconds a settled reservation's record is kept for idempotent retries."""
_BATCH_BUDGET = kv.MAX_OPS - 8
_MAX_ATTEMPTS = 40


# -- leases -------------------------------------------------------------------------


class _Leases:
    """Shared leases per TTL: granted with ``ttl + slack``, used for ``slack`` seconds."""

    def __init__(self, store: kv.LedgerStore, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock
        self._current: dict[int, tuple[int, float, int]] = {}  # ttl -> (id, granted, end_ms)
        self._locks: dict[int, asyncio.Lock] = collections.defaultdict(asyncio.Lock)

    @staticmethod
    def slack(ttl: int) -> int:
        return max(1, ttl // 10)

    def _peek(self, ttl: int) -> tuple[int, int] | None:
        found = self._current.get(ttl)
        if found is not None and self._clock() - found[1] <= self.slack(ttl) - 0.05:
            return found[0], found[2]
        return None

    async def get(self, ttl: int) -> tuple[int, int]:
        """(lease id, a hint of when it ends in unix ms) for a hold of ``ttl`` seconds.

        The lease is granted for ``ttl + slack`` and handed out for ``slack`` seconds
        after the grant was asked for, so every hold on it lives at least ``ttl``.
        """
        found = self._peek(ttl)
        if found is not None:
            return found
        async with self._locks[ttl]:
            found = self._peek(ttl)
            if found is not None:
                return found
            started = self._clock()
            lease_id, granted = await self._store.grant_lease(ttl + self.slack(ttl))
            end_ms = int(time.time() * 1000) + granted * 1000
            self._current[ttl] = (lease_id, started, end_ms)
            return lease_id, end_ms

    def forget(self) -> None:
        self._current.clear()


# -- requests -----------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    conds: list[kv.Cond] = field(default_factory=list)
    writes: list[kv.Write | kv.Remove] = field(default_factory=list)
    reads: list[kv.Read] = field(default_factory=list)
    answers: list[tuple[Request, Any]] = field(default_factory=list)
    tenants: dict[TenantId, TenantPlan] = field(default_factory=dict)  # applied on success
    reload: set[TenantId] = field(default_factory=set)  # re-read, then plan again
    lookups: dict[TenantId, set[str]] = field(default_factory=dict)  # settled records to read


class Ledger:
    """One replica's ledger over ``store``. Every method may raise ``Temporary``."""

    def __init__(
        self,
        store: kv.LedgerStore,
        *,
        max_inflight: int = 4,
        done_ttl: int = DONE_TTL,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._leases = _Leases(store, clock)
        self._done_ttl = done_ttl
        self._max_inflight = max_inflight
        self._cache: collections.OrderedDict[TenantId, TenantView] = collections.OrderedDict()
        self._cache_size = cache_size
        self._queue: collections.deque[Request] = collections.deque()
        self._inflight: set[TenantId] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats: collections.Counter[str] = collections.Counter()
        """txns, conflicts, requests, reloads: for metrics and benchmarks."""

    # -- the API --------------------------------------------------------------------

    async def reserve(
        self,
        tenant: TenantId,
        deltas: Counts,
        ttl: int,
        idempotency_key: str | None = None,
        *,
        site: str = "",
        region: str = "",
    ) -> Reservation:
        """Reserve ``deltas`` for ``ttl`` seconds, checked against every limit at once.

        Raises ``QuotaExceeded`` naming the first class that does not fit. Retrying with
        the same ``idempotency_key`` returns the same reservation (or how it was settled).
        """
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise errors.InvalidQuota("ttl", f"{ttl} is not within {MIN_TTL}..{MAX_TTL} seconds")
        if idempotency_key is None:
            rid = ReservationId(uuid.uuid4().hex)
        else:
            rid = reservation_id(idempotency_key)
        request = self._request("reserve", tenant, rid)
        request.deltas, request.ttl, request.explicit = dict(deltas), ttl, bool(idempotency_key)
        request.site, request.region = site, region
        result: Reservation = await self._submit(request)
        return result

    async def commit(
        self,
        tenant: TenantId,
        rid: ReservationId,
        *,
        site: str | None = None,
        region: str = "",
        split: Mapping[str, tuple[str, Counts]] | None = None,
    ) -> Settled:
        """Turn a live reservation into usage (at ``site`` if given); idempotent.

        ``split`` (site -> (region, amounts)) books the usage at several sites at once;
        its amounts must add up to exactly what was reserved (else ``ReservationConflict``).
        """
        request = self._request("commit", tenant, rid)
        request.site, request.region = site, region
        if split is not None:
            request.split = {s: (r, dict(a)) for s, (r, a) in split.items()}
        result: Settled = await self._submit(request)
        return result

    async def renew(self, tenant: TenantId, rid: ReservationId, ttl: int) -> Reservation:
        """Keep a live reservation for another ``ttl`` seconds (it moves to a new lease).

        Raises ``ReservationExpired`` when it is already gone: expiry is never undone.
        """
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise errors.InvalidQuota("ttl", f"{ttl} is not within {MIN_TTL}..{MAX_TTL} seconds")
        request = self._request("renew", tenant, rid)
        request.ttl = ttl
        result: Reservation = await self._submit(request)
        return result

    async def release(self, tenant: TenantId, rid: ReservationId) -> Settled:
        """Give a reservation back; idempotent, and a no-op once it has expired."""
        result: Settled = await self._submit(self._request("release", tenant, rid))
        return result

    async def view(self, tenant: TenantId) -> TenantView:
        """The tenant as the store has it now (not the cache)."""
        items, revision = await self._store.read(tenant_reads(tenant))
        return view_from(tenant, items, revision)

    async def set_quota(self, tenant: TenantId, quota: TenantQuota) -> int:
        """Write the tenant's limits (rewriting ``seq``); returns the revision."""
        for _ in range(_MAX_ATTEMPTS):
            seq = (await self._store.read([kv.Read(seq_key(tenant))]))[0][0]
            outcome = await self._store.txn(
                [kv.Unchanged(seq_key(tenant), seq[0].mod_revision if seq else 0)],
                [kv.Write(limits_key(tenant), to_json(quota.dump())), _bump(tenant)],
                [],
            )
            if outcome.succeeded:
                self._cache.pop(tenant, None)
                return outcome.revision
            await asyncio.sleep(random.uniform(0, 0.02))
        raise errors.Contended(f"limits of {tenant}: too many concurrent writers", retry_after=0.1)

    async def set_class(self, name: str, class_limits: Counts) -> int:
        """Write a named quota class; every tenant using it sees it at its next request."""
        outcome = await self._store.txn(
            [], [kv.Write(class_key(name), to_json({"limits": dict(class_limits)}))], []
        )
        self._cache.clear()
        return outcome.revision

    async def prefetch(self, tenants: list[TenantId]) -> None:
        """Read ``tenants`` into the cache ahead of their first request."""
        wanted = [t for t in tenants if t not in self._cache and t not in self._inflight]
        step = kv.MAX_OPS // 5
        for i in range(0, len(wanted), step):
            await self._load(wanted[i : i + step], {})

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the batcher ----------------------------------------------------------------

    def _request(self, op: str, tenant: TenantId, rid: ReservationId) -> Request:
        return Request(op, tenant, rid, asyncio.get_running_loop().create_future())

    async def _submit(self, request: Request) -> Any:
        self._queue.append(request)
        self._kick()
        return await request.future

    def _kick(self) -> None:
        while len(self._tasks) < self._max_inflight and self._queue:
            batch = self._take()
            if not batch:
                return
            task = asyncio.create_task(self._flush(batch))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._kick()

    def _take(self) -> list[Request]:
        """Queued requests of tenants not in flight, within one transaction's op budget."""
        taken: list[Request] = []
        tenants: set[TenantId] = set()
        budget = _BATCH_BUDGET
        keep: collections.deque[Request] = collections.deque()
        while self._queue:
            request = self._queue.popleft()
            if request.tenant in self._inflight:
                keep.append(request)
                continue
            cost = Request.COST + (0 if request.tenant in tenants else 3)
            if cost > budget:
                keep.append(request)
                keep.extend(self._queue)
                self._queue.clear()
                break
            budget -= cost
            tenants.add(request.tenant)
            taken.append(request)
        self._queue = keep
        self._inflight |= tenants
        return taken

    async def _flush(self, batch: list[Request]) -> None:
        tenants = {r.tenant for r in batch}
        try:
            await self._settle(batch)
        except errors.QuotaError as exc:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
        except BaseException as exc:  # a bug or cancellation: nobody may wait forever
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(
                        errors.LedgerUnavailable(f"ledger batch failed: {exc!r}", retry_after=0.1)
                    )
            if not isinstance(exc, Exception):
                raise
        finally:
            self._inflight.difference_update(tenants)

    async def _settle(self, batch: list[Request]) -> None:
        """Plan, write, and on a lost compare re-read and plan again."""
        reloaded: set[TenantId] = set()
        stale: set[TenantId] = set()
        lookups: dict[TenantId, set[str]] = {}
        for attempt in range(_MAX_ATTEMPTS):
            await self._ensure(batch, stale, lookups)
            reloaded |= stale
            leases = await self._leases_for(batch)
            plan = self._plan(batch, reloaded, leases)
            stale, lookups = set(), {}
            if plan.reload or plan.lookups:
                stale, lookups = plan.reload, plan.lookups
                self.stats["reloads"] += 1
                continue
            if plan.writes:
                try:
                    outcome = await self._store.txn(plan.conds, plan.writes, plan.reads)
                except errors.LeaseGone:
                    self._leases.forget()
                    continue
                self.stats["txns"] += 1
                if not outcome.succeeded:
                    self.stats["conflicts"] += 1
                    stale = self._diagnose(batch, plan, outcome)
                    if attempt >= 1:
                        # exponential backoff with full jitter: replicas that keep colliding
                        # spread out instead of retrying in lockstep (capped at 100 ms)
                        cap = min(0.1, 0.002 * 2 ** min(attempt, 6))
                        await asyncio.sleep(random.uniform(0, cap))
                    continue
                self._apply(plan, outcome.revision)
            self.stats["requests"] += len(plan.answers)
            for request, answer in plan.answers:
                if request.future.done():
                    continue
                if isinstance(answer, BaseException):
                    request.future.set_exception(answer)
                else:
                    request.future.set_result(answer)
            return
        raise errors.Contended("too many concurrent writers on these tenants", retry_after=0.05)

    async def _leases_for(self, batch: list[Request]) -> dict[int, tuple[int, int]]:
        ttls = {r.ttl for r in batch if r.op in ("reserve", "renew")}
        if any(r.op in ("commit", "release") for r in batch):
            ttls.add(self._done_ttl)
        return {ttl: await self._leases.get(ttl) for ttl in sorted(ttls)}

    async def _ensure(
        self, batch: list[Request], stale: set[TenantId], lookups: dict[TenantId, set[str]]
    ) -> None:
        """Read every tenant that is not cached, is stale, or needs settled records."""
        wanted = [
            t
            for t in dict.fromkeys(r.tenant for r in batch)
            if t not in self._cache or t in stale or t in lookups
        ]
        chunk: list[TenantId] = []
        size = 0
        for tenant in wanted:
            n = 5 + len(lookups.get(tenant, ()))
            if chunk and size + n > kv.MAX_OPS:
                await self._load(chunk, lookups)
                chunk, size = [], 0
            chunk.append(tenant)
            size += n
        if chunk:
            await self._load(chunk, lookups)

    async def _load(self, tenants: list[TenantId], lookups: dict[TenantId, set[str]]) -> None:
        reads: list[kv.Read] = []
        spans: list[tuple[TenantId, int, int]] = []
        for tenant in tenants:
            ids = sorted(lookups.get(tenant, ()))
            start = len(reads)
            reads += tenant_reads(tenant, ids)
            spans.append((tenant, start, len(reads)))
        items, revision = await self._store.read(reads)
        self.stats["loads"] += len(tenants)
        for tenant, start, end in spans:
            view = view_from(tenant, items[start:end], revision)
            view.looked = set(lookups.get(tenant, ()))
            self._cache[tenant] = view
            self._cache.move_to_end(tenant)
        while len(self._cache) > self._cache_size:
            oldest = next(iter(self._cache))
            if oldest in self._inflight:
                break
            self._cache.popitem(last=False)

    # -- planning (pure, over the cached views) ---------------------------------------

    def _plan(
        self,
        batch: list[Request],
        reloaded: set[TenantId],
        leases: dict[int, tuple[int, int]],
    ) -> _Plan:
        plan = _Plan()
        now_ms = int(time.time() * 1000)
        by_tenant: dict[TenantId, list[Request]] = {}
        for request in batch:
            by_tenant.setdefault(request.tenant, []).append(request)
        for tenant, requests in by_tenant.items():
            view = self._cache[tenant]
            planner = TenantPlan(view, self._done_ttl, leases, now_ms, tenant in reloaded)
            for request in requests:
                planner.add(request)
            if planner.reload:
                plan.reload.add(tenant)
            if planner.lookups:
                plan.lookups[tenant] = planner.lookups
            plan.answers += planner.answers
            if planner.writes:
                plan.conds += [
                    kv.Unchanged(seq_key(tenant), view.seq_mod),
                    kv.Unchanged(class_key(view.class_name), view.class_mod),
                    *planner.conds,
                ]
                plan.writes += [_bump(tenant), *planner.writes]
                if planner.account is not view.account:
                    plan.writes.append(
                        kv.Write(ledger_key(tenant), to_json(planner.account.dump()))
                    )
                plan.reads += [
                    kv.Read(seq_key(tenant)),
                    kv.Read(class_key(view.class_name)),
                    *planner.reads,
                ]
                plan.tenants[tenant] = planner
        return plan

    def _apply(self, plan: _Plan, revision: int) -> None:
        for tenant, planner in plan.tenants.items():
            self._cache[tenant] = planner.landed(revision)
        for index, (request, answer) in enumerate(plan.answers):
            if isinstance(answer, Reservation) and answer.revision == 0:
                plan.answers[index] = (request, _with_revision(answer, revision))

    def _diagnose(self, batch: list[Request], plan: _Plan, outcome: kv.Outcome) -> set[TenantId]:
        """After a lost compare: which tenants to re-read; learn settled and gone holds."""
        stale: set[TenantId] = set()
        for read, found in zip(plan.reads, outcome.reads, strict=True):
            mod = found[0].mod_revision if found else 0
            if read.key.startswith("seq/"):
                tenant = TenantId(read.key[len("seq/") :])
                view = self._cache.get(tenant)
                if view is None or mod != view.seq_mod:
                    stale.add(tenant)
            elif read.key.startswith("classes/"):
                for tenant in {r.tenant for r in batch}:
                    view = self._cache.get(tenant)
                    if view is not None and class_key(view.class_name) == read.key:
                        if mod != view.class_mod:
                            stale.add(tenant)
            elif read.key.startswith("done/") and found:
                _, tenant_s, rid = read.key.split("/", 2)
                view = self._cache.get(TenantId(tenant_s))
                if view is not None:
                    view.done[rid] = Settled.parse(rid, from_json(found[0].value, read.key))
            elif read.key.startswith("holds/"):
                _, tenant_s, rid = read.key.split("/", 2)
                view = self._cache.get(TenantId(tenant_s))
                hold = view.holds.get(rid) if view is not None else None
                if view is not None and hold is not None:
                    if not found or found[0].create_revision != hold.create_revision:
                        del view.holds[rid]  # expired under us
                        view.reserved.remove(hold)
        return stale


def _bump(tenant: str) -> kv.Write:
    return kv.Write(seq_key(tenant), b"")


def _with_revision(reservation: Reservation, revision: int) -> Reservation:
    r = reservation
    return Reservation(r.tenant, r.id, r.deltas, r.site, r.expires_ms, r.state, revision)
