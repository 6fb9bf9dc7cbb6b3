"""Random quota requesters and the checker of what etcd recorded (invariant 7).

``Requester`` runs random reservations against a tight limit — commit, release, or
abandon (left to expire) — and records every commit it saw succeed. ``check_history``
replays etcd's own history of the ledger's keys, revision by revision, and fails if at any
revision committed + reserved exceeds a limit, if a ledger change differs from the
commits that landed with it, or if a commit the clients saw is not counted exactly once.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from broker.devfed.federation import Federation
from broker.store import keys
from broker.store.etcd import EtcdStore
from broker.store import protocol as p
from quota.models import DEFAULTS, RESOURCE_CLASSES, Account, TenantQuota

TIGHT = {"cores": 40, "instances": 16, "ram_mb": 20_480}
SITES = ("site-a", "site-b", "site-c")


@dataclass
class Tally:
    committed: list[tuple[str, str, dict[str, int]]] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)


Reserve = Callable[[str, dict[str, int], int, str, str], Awaitable[str | None]]
"""(tenant, deltas, ttl, idempotency key, site) -> reservation id, or None if refused."""
Settle = Callable[[str, str, str], Awaitable[bool]]
"""(op "commit"/"release", tenant, id) -> True if it succeeded (False: expired)."""


async def requester(
    index: int, rounds: int, tenants: list[str], reserve: Reserve, settle: Settle, tally: Tally
) -> None:
    """One requester: ``rounds`` random reservations, each committed, released or abandoned."""
    rng = random.Random(index)
    owned: list[tuple[str, str, dict[str, int]]] = []  # what this requester committed
    refused = False
    for n in range(rounds):
        tenant = rng.choice(tenants)
        key = f"r{index}-{n}"
        mine = [o for o in owned if o[0] == tenant]
        # delete something this requester created: often, and always after a refusal, so
        # the tenants stay near their limits instead of filling up for good
        if mine and (refused or rng.random() < 0.3):
            item = mine[rng.randrange(len(mine))]
            deltas = {c: -v for c, v in item[2].items()}
            site = item[1]
        else:
            item = None
            deltas = {"cores": rng.randint(1, 4), "instances": 1,
                      "ram_mb": rng.choice((512, 1024, 2048))}
            site = rng.choice(SITES)
        rid = await reserve(tenant, deltas, 2, key, site)
        refused = rid is None
        if rid is None:
            tally.outcomes["refused"] += 1
            await asyncio.sleep(rng.uniform(0.002, 0.01))  # a client backs off a little
            continue
        roll = rng.random()
        if roll < 0.55:
            if await settle("commit", tenant, rid):
                tally.committed.append((tenant, rid, deltas))
                tally.outcomes["committed"] += 1
                if item is not None:
                    owned.remove(item)
                else:
                    owned.append((tenant, site, deltas))
            else:
                tally.outcomes["expired"] += 1
        elif roll < 0.85:
            await settle("release", tenant, rid)
            tally.outcomes["released"] += 1
        else:
            tally.outcomes["abandoned"] += 1


async def replay(
    store: p.Store,
    start: int,
    end: int,
    limits: dict[str, dict[str, int]],
    ledgers: dict[str, Account],
    holds: dict[str, dict[str, int]],
    committed_at: Counter[str],
    *,
    strict: bool = True,
) -> tuple[int, list[str]]:
    """Replay ``quota/`` from ``start`` through ``end`` onto the state given (tenant limits,
    accounts, holds by key as they stood before ``start``), asserting at every revision
    that no tenant is over a limit and that every account change is the commits that
    landed with it. Returns how many revisions were replayed and, unless ``strict`` (which
    raises at the first), every revision that broke one of those."""
    revisions = 0
    broken: list[str] = []

    def apply(events: list[p.WatchEvent]) -> None:
        try:
            _apply(events, limits, ledgers, holds, committed_at)
        except AssertionError as exc:
            if strict:
                raise
            broken.append(str(exc))

    batch: list[p.WatchEvent] = []
    watch = store.watch_prefix(keys.QUOTA, start_revision=start)
    try:
        async for ev in watch:
            if batch and ev.mod_revision != batch[0].mod_revision:
                apply(batch)
                revisions += 1
            if not batch or ev.mod_revision != batch[0].mod_revision:
                batch = []
            batch.append(ev)
            if ev.mod_revision >= end:
                break
    finally:
        await watch.aclose()  # type: ignore[attr-defined]
    apply(batch)
    return revisions + 1, broken


async def state_at(
    store: p.Store,
) -> tuple[dict[str, dict[str, int]], dict[str, Account], dict[str, dict[str, int]], int]:
    """Limits, accounts and holds as they stand now, and the revision they were read at."""
    kvs, revision = await store.get_prefix(keys.QUOTA)
    limits: dict[str, dict[str, int]] = {}
    ledgers: dict[str, Account] = {}
    holds: dict[str, dict[str, int]] = {}
    for kv in kvs:
        rel = kv.key[len(keys.QUOTA) :]
        family, _, rest = rel.partition("/")
        tenant = rest.split("/", 1)[0]
        if family == "limits":
            limits[tenant] = _limits(TenantQuota.parse(json.loads(kv.value)))
        elif family == "ledger":
            ledgers[tenant] = Account.parse(json.loads(kv.value))
        elif family == "holds":
            holds[rel] = json.loads(kv.value)["deltas"]
    return limits, ledgers, holds, revision


async def quota_now(
    fed: Federation,
) -> tuple[dict[str, dict[str, int]], dict[str, Account], dict[str, dict[str, int]], int]:
    """``state_at`` of the federation's etcd."""
    store = EtcdStore.from_settings(fed.etcd_settings())
    try:
        return await state_at(store)
    finally:
        await store.close()


def _limits(quota: TenantQuota) -> dict[str, int]:
    return {**DEFAULTS, **quota.limits}


async def check_history(
    store: p.Store, start: int, end: int, tally: Tally
) -> dict[str, Any]:
    """Replay ``quota/`` from ``start`` through ``end``; assert invariant 7 at every revision."""
    ledgers: dict[str, Account] = {}
    holds: dict[str, dict[str, int]] = {}  # hold key -> deltas
    committed_at: Counter[str] = Counter()  # rid -> times a committed record was written
    revisions, _ = await replay(store, start, end, {}, ledgers, holds, committed_at)
    seen = Counter(rid for _, rid, _ in tally.committed)
    assert all(n == 1 for n in seen.values()), "a client saw one commit twice"
    doubled = [rid for rid, n in committed_at.items() if n != 1]
    assert not doubled, f"committed more than once in etcd: {doubled[:5]}"
    assert set(committed_at) == set(seen), (
        f"commits seen by clients and in etcd differ: {set(committed_at) ^ set(seen)}"
    )
    for tenant, account in ledgers.items():
        expected = Counter[str]()
        for t, _, deltas in tally.committed:
            if t == tenant:
                expected.update(deltas)
        for cls in RESOURCE_CLASSES:
            assert account.used(cls) == expected.get(cls, 0), (tenant, cls)
    return {"revisions": revisions, "commits": len(committed_at), "live_holds": len(holds)}


def _apply(
    events: list[p.WatchEvent],
    limits: dict[str, dict[str, int]],
    ledgers: dict[str, Account],
    holds: dict[str, dict[str, int]],
    committed_at: Counter[str],
) -> None:
    """Apply one revision's events, then check every tenant touched."""
    root = keys.QUOTA
    before = {t: a for t, a in ledgers.items()}
    landed: dict[str, Counter[str]] = {}
    touched: set[str] = set()
    for ev in events:
        rel = ev.key[len(root) :]
        family, _, rest = rel.partition("/")
        tenant = rest.split("/", 1)[0]
        touched.add(tenant)
        if family == "limits" and ev.type is p.EventType.PUT:
            limits[tenant] = _limits(TenantQuota.parse(json.loads(ev.value)))
        elif family == "ledger" and ev.type is p.EventType.PUT:
            ledgers[tenant] = Account.parse(json.loads(ev.value))
        elif family == "holds":
            if ev.type is p.EventType.PUT:
                holds[rel] = json.loads(ev.value)["deltas"]
            else:
                holds.pop(rel, None)
        elif family == "done" and ev.type is p.EventType.PUT:
            record = json.loads(ev.value)
            if record["state"] == "committed":
                committed_at[rest.split("/", 1)[1]] += 1
                landed.setdefault(tenant, Counter()).update(record["deltas"])
    revision = events[0].mod_revision if events else 0
    for tenant in touched:
        old, new = before.get(tenant, Account()), ledgers.get(tenant, Account())
        change = {c: new.used(c) - old.used(c) for c in RESOURCE_CLASSES}
        want = landed.get(tenant, Counter())
        assert change == {c: want.get(c, 0) for c in RESOURCE_CLASSES}, (
            f"revision {revision}: ledger of {tenant} changed by {change}, commits say {want}"
        )
        tenant_limits = limits.get(tenant, dict(DEFAULTS))
        reserved = Counter[str]()
        for key, deltas in holds.items():
            if key.startswith(f"holds/{tenant}/"):
                reserved.update({c: n for c, n in deltas.items() if n > 0})
        for cls, limit in tenant_limits.items():
            total = new.used(cls) + reserved.get(cls, 0)
            assert limit < 0 or total <= limit, (
                f"revision {revision}: {tenant} {cls} committed {new.used(cls)} + reserved "
                f"{reserved.get(cls, 0)} > limit {limit}"
            )
