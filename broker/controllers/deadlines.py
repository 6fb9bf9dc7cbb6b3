"""Deadlines of a first placement (issue 10 item 7): members that do not come up are moved.

A member of a PLACED VNF whose server failed for good, or that is not READY within
``vnf.ready_timeout_s`` of its placement, is re-placed: ``failover.replace.decide`` (the
Planner's own checkers and scorers, the anti-affinity and latency rules against the
VNF's other members) chooses its new site, host and NUMA cell, away from the host it
failed on and, from its second re-placement on, from that site too — as the failover
machine does for a replacement past its deadline. After ``vnf.max_attempts`` placements,
or when nowhere is left, the member is given up: its claim goes and its server is
deleted, and the VNF is settled by its VDUs' ``redundancy.failover.on_member_failure``
(``settle``): DEGRADED while each VDU still has a READY member, FAILED otherwise.

Invariant: a move or a give-up is one fenced transaction compared on the VNF record and
on the claims of every site it touches: the member's old claim goes and its new one
comes, its old server and ports are tombstoned and its new site's objects written with
the record and the placement — nothing is claimed twice or left running unrecorded.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.election.fencing import fenced_txn
from broker.failover import replace
from broker.failover.model import Ev
from broker.models import codec, event, objects
from broker.models import vnf as model
from broker.placement import claims as cl
from broker.placement import render
from broker.placement.plan import Assignment, Planner, assignment_json
from broker.placement.snapshot import Snapshot
from broker.store import keys
from broker.store.protocol import Compare, Get, KeyValue, Op, Put, Store, Target, TxnOp


@dataclass(frozen=True, slots=True)
class Limits:
    ready_timeout_ms: int = 120_000
    max_attempts: int = 3


def overdue(m: model.MemberStatus, state: objects.State, now: int, limits: Limits) -> bool:
    """Whether member ``m``, observed in ``state``, is to be re-placed (or given up) now."""
    if m.given_up or state is objects.State.READY:
        return False
    if state is objects.State.FAILED:
        return True
    return bool(m.placed_ms) and now - m.placed_ms >= limits.ready_timeout_ms


def next_deadline(members: Iterable[model.MemberStatus], now: int, limits: Limits) -> float | None:
    """Seconds until the first waiting member's deadline (None: no member is waiting)."""
    waits = [
        m.placed_ms + limits.ready_timeout_ms - now
        for m in members
        if m.placed_ms and not m.given_up and m.state != objects.State.READY
    ]
    return max(0.0, min(waits) / 1000) if waits else None


def _avoid(m: model.MemberStatus) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(hosts, sites) the member's next placement keeps away from: the host it failed on,
    and from its second re-placement on the site as well (``machine._timed_out``)."""
    hosts = tuple(sorted({*m.avoid_hosts, m.host} - {""}))
    sites = m.avoid_sites if m.attempts < 2 else tuple(sorted({*m.avoid_sites, m.site}))
    return hosts, sites


def decide(
    snap: Snapshot,
    planner: Planner,
    desc: model.Descriptor,
    record: model.VnfRecord,
    m: model.MemberStatus,
) -> replace.Decision:
    """Where member ``m`` goes next, by the failover's own ``replace.decide``."""
    peers = [
        replace.Peer(o.vdu, o.site, o.host)
        for o in record.members
        if o.name != m.name and not o.given_up
    ]
    hosts, sites = _avoid(m)
    ranker = replace.Ranker(snap, planner)
    return replace.decide(ranker, desc, f"{record.id}/{m.name}", m.vdu, peers, sites, hosts)


def settle(
    desc: model.Descriptor, members: Sequence[model.MemberStatus]
) -> tuple[model.VnfState | None, str]:
    """The VNF's state once no member is waiting (None, "": some still are)."""
    if any(m.state != objects.State.READY and not m.given_up for m in members):
        return None, ""
    lost = [m for m in members if m.given_up]
    if not lost:
        return model.VnfState.ACTIVE, ""
    why = "; ".join(f"member {m.name} given up: {m.message}" for m in lost)
    for vdu in desc.vdus:
        mine = [m for m in members if m.vdu == vdu.name]
        if vdu.redundancy.failover.on_member_failure == "fail" and any(m.given_up for m in mine):
            return model.VnfState.FAILED, f"{why} (on_member_failure: fail)"
        if not any(m.state == objects.State.READY for m in mine):
            return model.VnfState.FAILED, f"{why}; no member of {vdu.name} is READY"
    return model.VnfState.DEGRADED, why


# -- the writes ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Txn:
    """One fenced transaction being built: its compares, writes and read-backs."""

    checks: list[Compare]
    writes: list[TxnOp]
    reads: list[Get]

    def claims(self, snap: Snapshot, site_id: str, drop: str, add: cl.Claim | None) -> None:
        """Site ``site_id``'s claims without ``drop`` (and with ``add``), compared."""
        site = snap.sites[site_id]
        kept = {k: c for k, c in site.claims.items() if k != drop}
        if add is not None:
            kept[add.member] = add
        self.checks.append(Compare(keys.claims(site_id), Target.MOD, Op.EQUAL, site.claims_rev))
        self.writes.append(cl.put(site_id, kept))
        self.reads.append(Get(keys.claims(site_id)))


async def _current(store: Store, wanted: list[str]) -> dict[str, objects.Desired]:
    if not wanted:
        return {}
    found = await store.txn([], [Get(k) for k in wanted])
    return {
        k: objects.Desired.decode(r[0].value)
        for k, r in zip(wanted, found.responses, strict=True)
        if r
    }


async def _server_and_ports(store: Store, site: str, server: str) -> list[str]:
    ports, _ = await store.get_prefix(keys.desired(site, "port", f"{server}-"))
    return [keys.desired(site, render.SERVER, server), *(p.key for p in ports)]


def _tombstone(key: str, obj: objects.Desired) -> Put:
    return Put(key, obj.tombstone().encode())


async def _objects(
    store: Store,
    vnf_id: str,
    desc: model.Descriptor,
    old: model.MemberStatus,
    a: Assignment,
    vlans: Mapping[str, int],
) -> tuple[list[Put], list[list[str]], int]:
    """The member's desired writes: its old server and ports tombstoned when it leaves
    their site, and its new site's objects (first or next generation where they differ;
    the server always a new one); and the generation of its server."""
    server = render.server_name(vnf_id, old.name)
    leaving = await _server_and_ports(store, old.site, server) if old.site != a.site else []
    new = render.objects(vnf_id, desc, [a], dict(vlans))
    held = await _current(store, [*leaving, *(o.key for o in new)])
    puts = [_tombstone(k, held[k]) for k in leaving if k in held and not held[k].deleted]
    generation = objects.FIRST
    for o in new:
        cur = held.get(o.key)
        if cur is None:
            puts.append(o.put())
        elif cur.deleted or cur.spec != o.spec or o.kind == render.SERVER:
            revised = cur.revise(o.spec)
            puts.append(Put(o.key, revised.encode()))
            if o.kind == render.SERVER:
                generation = revised.generation
    return puts, [[o.site, o.kind, o.name] for o in new], generation


def _event(kind: str, vnf_id: str, message: str) -> Put:
    ev = event.new(kind, vnf_id, message)
    return Put(keys.event(ev.id), codec.encode(ev))


async def _land(store: Store, fence: int, snap: Snapshot, kv: KeyValue, txn: _Txn) -> bool:
    """Run ``txn`` compared on the record; the snapshot takes in the claims either way."""
    txn.checks.append(Compare(kv.key, Target.MOD, Op.EQUAL, kv.mod_revision))
    result = await fenced_txn(store, fence, txn.writes, txn.checks, failure_ops=txn.reads)
    if result.succeeded:
        for put in txn.writes:
            if isinstance(put, Put) and put.key.startswith(keys.CLAIMS):
                snap.apply(put.key, put.value, result.revision)
        return True
    for get, found in zip(txn.reads, result.responses, strict=False):
        if found:
            snap.apply(found[0].key, found[0].value, found[0].mod_revision)
        else:
            snap.apply(get.key, None, result.revision)
    return False


def _placement_doc(
    placement: dict[str, Any], snap: Snapshot, a: Assignment, new_objects: list[list[str]]
) -> bytes:
    doc = dict(placement)
    doc["assignments"] = [
        assignment_json(snap, a) if x.get("member") == a.member.name else x
        for x in placement.get("assignments", [])
    ]
    had = placement.get("objects", [])
    known = {tuple(o) for o in had}
    doc["objects"] = [*had, *(o for o in new_objects if tuple(o) not in known)]
    return json.dumps(doc, separators=(",", ":")).encode()


async def move(
    store: Store,
    fence: int,
    snap: Snapshot,
    kv: KeyValue,
    record: model.VnfRecord,
    placement: dict[str, Any],
    m: model.MemberStatus,
    a: Assignment,
    vlans: Mapping[str, int],
    why: str,
    now: int,
) -> bool:
    """Re-place member ``m`` as ``a`` (the VNF's VLAN ids ``vlans`` held for its site);
    False when something moved meanwhile (the caller steps again)."""
    desc = model.parse(record.descriptor)
    site, claim = a.site, a.claim
    puts, new_objects, generation = await _objects(store, record.id, desc, m, a, vlans)
    hosts, sites = _avoid(m)
    moved = dataclasses.replace(
        m,
        site=site,
        host=claim.host,
        numa_cell=claim.cell,
        state="PENDING",
        message=why,
        observed_host="",
        placed_ms=now,
        attempts=m.attempts + 1,
        avoid_hosts=hosts,
        avoid_sites=sites,
        generation=generation,
    )
    members = tuple(moved if x.name == m.name else x for x in record.members)
    update = dataclasses.replace(record, members=members, updated_ms=now)
    txn = _Txn([], [], [])
    ref = f"{record.id}/{m.name}"
    if m.site != site and m.site in snap.sites:
        txn.claims(snap, m.site, ref, None)
    txn.claims(snap, site, ref, claim)
    txn.writes += [
        *puts,
        Put(kv.key, codec.encode(update)),
        Put(keys.placement(record.id), _placement_doc(placement, snap, a, new_objects)),
        _event(
            Ev.MEMBER_LOST,
            record.id,
            f"member {m.name} at {m.site} ({m.host}): {why}; re-placed at {site} "
            f"({claim.host}), placement {m.attempts + 1}",
        ),
    ]
    return await _land(store, fence, snap, kv, txn)


async def give_up(
    store: Store,
    fence: int,
    snap: Snapshot,
    kv: KeyValue,
    record: model.VnfRecord,
    m: model.MemberStatus,
    why: str,
    now: int,
) -> bool:
    """Stop trying member ``m``: its claim goes, its server and ports are deleted."""
    gone = dataclasses.replace(m, state=objects.State.FAILED.value, message=why, given_up=True)
    members = tuple(gone if x.name == m.name else x for x in record.members)
    update = dataclasses.replace(record, members=members, updated_ms=now)
    txn = _Txn([], [], [])
    if m.site in snap.sites:
        txn.claims(snap, m.site, f"{record.id}/{m.name}", None)
    leaving = await _server_and_ports(store, m.site, render.server_name(record.id, m.name))
    held = await _current(store, leaving)
    txn.writes += [_tombstone(k, d) for k, d in held.items() if not d.deleted]
    txn.writes += [
        Put(kv.key, codec.encode(update)),
        _event(Ev.MEMBER_LOST, record.id, f"member {m.name} at {m.site} given up: {why}"),
    ]
    return await _land(store, fence, snap, kv, txn)


def outcome_event(state: model.VnfState, vnf_id: str, reason: str) -> Put | None:
    """The event of a placement settled otherwise than ACTIVE."""
    if state is model.VnfState.DEGRADED:
        return _event(Ev.DEGRADED, vnf_id, reason)
    if state is model.VnfState.FAILED:
        return _event(Ev.FAILED, vnf_id, reason)
    return None
