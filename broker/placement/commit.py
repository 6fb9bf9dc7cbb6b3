"""Landing a plan: one fenced etcd transaction, or nothing at all.

The transaction compares, for every chosen site, the ``mod_revision`` of
``inventory/<site>`` and of ``claims/<site>`` that the plan was made against, plus the
leader's fence (invariant 3) and whatever the caller adds (its own VNF record); it writes
the sites' new claims together with the caller's ops (the VNF record, its placement,
the desired objects). If anything moved, the failure branch reads those keys back in the
same transaction; the snapshot takes them in and the caller plans again.

Invariants: no cell is ever double-booked — two plans that touch one site cannot both
pass their compares; a VNF is placed whole or not at all (one transaction).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from broker.election.fencing import fenced_txn
from broker.placement import claims as cl
from broker.placement.plan import PlanResult
from broker.placement.snapshot import Snapshot
from broker.store import keys
from broker.store.protocol import Compare, Get, KeyValue, Op, Put, Store, Target, TxnOp


@dataclass(frozen=True, slots=True)
class Outcome:
    landed: bool
    revision: int
    extra: tuple[tuple[KeyValue, ...], ...] = ()
    """On a failed compare: what ``extra_reads`` returned."""


async def commit(
    store: Store,
    fence: int,
    snap: Snapshot,
    result: PlanResult,
    ops: Sequence[TxnOp],
    *,
    compares: Sequence[Compare] = (),
    extra_reads: Sequence[Get] = (),
) -> Outcome:
    """Write ``result``'s claims and ``ops`` if nothing it relied on has changed."""
    new: dict[str, list[cl.Claim]] = {}
    for a in result.assignments:
        new.setdefault(a.site, []).append(a.claim)
    checks: list[Compare] = [*compares]
    writes: list[TxnOp] = []
    reads: list[Get] = []
    for site_id, site_claims in sorted(new.items()):
        inv_rev, claims_rev = result.revisions[site_id]
        checks.append(Compare(keys.inventory(site_id), Target.MOD, Op.EQUAL, inv_rev))
        checks.append(Compare(keys.claims(site_id), Target.MOD, Op.EQUAL, claims_rev))
        merged = dict(snap.sites[site_id].claims)
        merged.update((c.member, c) for c in site_claims)
        writes.append(cl.put(site_id, merged))
        reads += [Get(keys.inventory(site_id)), Get(keys.claims(site_id))]
    txn = await fenced_txn(
        store, fence, [*writes, *ops], checks, failure_ops=[*reads, *extra_reads]
    )
    if txn.succeeded:
        for site_id, site_claims in new.items():
            snap.add_claims(snap.sites[site_id], site_claims, txn.revision)
        return Outcome(True, txn.revision)
    for get, found in zip(reads, txn.responses, strict=False):
        if found:
            snap.apply(found[0].key, found[0].value, found[0].mod_revision)
        else:
            snap.apply(get.key, None, txn.revision)
    return Outcome(False, txn.revision, tuple(txn.responses[len(reads) :]))


async def release(
    store: Store,
    fence: int,
    snap: Snapshot,
    vnf_id: str,
    sites: Collection[str],
    ops: Sequence[TxnOp] = (),
    *,
    compares: Sequence[Compare] = (),
) -> bool:
    """Drop every claim of ``vnf_id`` at ``sites`` (and run ``ops``) in one fenced txn.

    Compares each claims key's revision as the snapshot knows it (and ``compares``); False
    when one moved (the snapshot has caught up from the failure branch: call again).
    """
    checks: list[Compare] = list(compares)
    writes: list[TxnOp] = []
    reads: list[Get] = []
    for site_id in sorted(set(sites)):
        site = snap.sites.get(site_id)
        if site is None:
            continue
        kept = {m: c for m, c in site.claims.items() if c.vnf != vnf_id}
        checks.append(Compare(keys.claims(site_id), Target.MOD, Op.EQUAL, site.claims_rev))
        writes.append(cl.put(site_id, kept))
        reads.append(Get(keys.claims(site_id)))
    txn = await fenced_txn(store, fence, [*writes, *ops], checks, failure_ops=reads)
    for get, found in zip(reads, txn.responses, strict=False):
        if found:
            snap.apply(found[0].key, found[0].value, found[0].mod_revision)
        elif not txn.succeeded:
            snap.apply(get.key, None, txn.revision)
    if txn.succeeded:
        for put in writes:
            assert isinstance(put, Put)
            snap.apply(put.key, put.value, txn.revision)
    return txn.succeeded


async def mark_ready(
    store: Store, fence: int, snap: Snapshot, site_id: str, members: dict[str, int]
) -> bool:
    """Record when members' servers were seen READY, so inventory can absorb the claims."""
    site = snap.sites.get(site_id)
    if site is None:
        return True
    updated = dict(site.claims)
    changed = False
    for member, ready_ms in members.items():
        claim = updated.get(member)
        if claim is not None and not claim.ready_ms:
            updated[member] = cl.replace_ready(claim, ready_ms)
            changed = True
    if not changed:
        return True
    check = Compare(keys.claims(site_id), Target.MOD, Op.EQUAL, site.claims_rev)
    put = cl.put(site_id, updated)
    txn = await fenced_txn(store, fence, [put], [check], failure_ops=[Get(keys.claims(site_id))])
    if txn.succeeded:
        snap.apply(put.key, put.value, txn.revision)
    elif txn.responses and txn.responses[0]:
        kv = txn.responses[0][0]
        snap.apply(kv.key, kv.value, kv.mod_revision)
    return txn.succeeded
