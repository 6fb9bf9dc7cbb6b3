"""The VNF controller (leader only): place pending VNFs, follow their members, tear down.

For every ``vnfs/<id>`` the API accepted it reserves the tenant's quota, asks the
``Planner`` on the live snapshot, and commits claims, placement and the PLACED record in
one fenced transaction (retrying when the snapshot was stale), with as many desired
objects as fit; the rest follow in fenced batches anchored on the record
(``batches``). It then follows the members' servers under ``observed/`` — renewing the
quota reservation while it waits — and all READY commits the quota at the members' sites
and makes the VNF ACTIVE. A member whose server failed for good or missed its READY
deadline is re-placed, and after ``vnf.max_attempts`` given up (``deadlines``): the VNF
is DEGRADED, or FAILED (torn down) when nothing of a VDU serves or its policy says so. A
quota refusal fails the VNF with the ledger's reason (class, request, what is left) and
writes nothing under ``desired/``. Deleting writes every object's tombstone
(``Desired.tombstone``: the generation after the stored one, ``deleted``) in batches, and
once the servers are gone gives the quota back (releases the reservation, or the usage
of an ACTIVE VNF) and releases the claims and the record.

Invariants: a VNF's claims are taken whole or not at all, and the record counts exactly
the desired objects written; a reservation that does not end in a serving VNF is
released; every write is fenced (a deposed leader changes nothing).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from broker.controllers import registry
from broker import errors
from broker.election.fencing import fenced_txn
from broker.models import codec, objects
from broker.models import vnf as model
from broker.placement import commit, feasible, render
from broker.quotas.headroom import REFUSED, Headroom, SiteUsage, Unlimited
from broker.placement.plan import Planner, PlanResult, assignment_json
from broker.placement.snapshot import Live, Snapshot
from broker.controllers import batches, deadlines, imageorders, keyed, replacing, restoring
from broker.failover import replace
from broker.settings import StitchingSettings
from broker.stitching.ledger import Ledger
from broker.store import follow, keys
from quota import errors as quota_errors
from broker.store.protocol import Compare, Delete, Get, KeyValue, Op, Put, Store, Target

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 16
RESYNC_S = 5.0
EXPLAIN_STORED = 20
COMMITTED = "quota"
"""``extra`` key of a VNF record whose reservation was committed (its usage is booked)."""


def now_ms() -> int:
    return int(time.time() * 1000)


class VnfController:
    def __init__(
        self,
        store: Store,
        fence: int,
        *,
        headroom: Headroom | None = None,
        planner: Planner | None = None,
        snapshot: Live | None = None,
        concurrency: int = 8,
        limits: deadlines.Limits | None = None,
        stitching: StitchingSettings | None = None,
    ) -> None:
        self.store, self.fence = store, fence
        self.vlans = Ledger(store, fence, stitching or StitchingSettings())
        """The VLAN ids of the VNFs' provider links (the stitching ledger, fenced)."""
        self.headroom: Headroom = headroom or Unlimited()
        self.planner = planner or Planner()
        self._own_live = snapshot is None
        self.live = snapshot or Live(store)
        """The replica's placement snapshot (followed from its first read; else ``run`` does)."""
        self.snap = self.live.snap
        self._descs: dict[str, model.Descriptor] = {}
        """VNF id → its descriptor, parsed once (a record's descriptor never changes)."""
        self._steps = keyed.Steps(self.step, "vnf", concurrency=concurrency)
        self._servers: dict[tuple[str, str], str] = {}
        """(site, server name) → VNF id, to route observed statuses."""
        self.limits = limits or deadlines.Limits()
        self.clock: Callable[[], int] = now_ms
        """Milliseconds now, for members' READY deadlines (tests drive it)."""
        self._timers: dict[str, asyncio.TimerHandle] = {}
        """VNF id → the call that steps it at its first member's READY deadline."""

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            if self._own_live:
                tg.create_task(self.live.run())
            self.snap = await self.live.current()
            # 1,000 sites x 50 hosts is millions of long-lived objects: keep the cyclic GC
            # from scanning them on every collection (pauses of 100+ ms otherwise)
            gc.freeze()
            tg.create_task(self._follow(keys.VNFS, self._on_vnf))
            tg.create_task(self._follow(keys.OBSERVED, self._on_observed))
            tg.create_task(self._resync())

    # -- event routing -------------------------------------------------------------------

    async def _follow(self, prefix: str, handle: Callable[[str, bytes], None]) -> None:
        async for key, value in follow.changes(self.store, prefix):
            handle(key, value)

    def _on_vnf(self, key: str, value: bytes) -> None:
        if value:
            self.kick(keys.name_in(keys.VNFS, key))

    def _on_observed(self, key: str, value: bytes) -> None:
        site, kind, name = keys.split_object(key)
        if kind == render.SERVER:
            vnf_id = self._servers.get((site, name))
            if vnf_id is not None:
                self.kick(vnf_id)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_S)
            self._steps.check()
            try:
                kvs, _ = await self.store.get_prefix(keys.VNFS)
            except errors.StoreUnavailable as exc:  # the watches re-list when etcd is back
                log.warning("vnf controller: resync skipped (%s)", exc)
                continue
            for kv in kvs:
                rec = codec.decode(model.VnfRecord, kv.value)
                if rec.deleted or rec.state not in (model.VnfState.ACTIVE, model.VnfState.FAILED):
                    self.kick(rec.id)

    def kick(self, vnf_id: str) -> None:
        self._steps.kick(vnf_id)

    async def drain(self) -> None:
        """Wait until no VNF is being worked on (for tests)."""
        await self._steps.drain()

    # -- one step of one VNF ---------------------------------------------------------------

    async def step(self, vnf_id: str) -> None:
        kv = await self.store.get(keys.vnf(vnf_id))
        if kv is None:
            return
        record = codec.decode(model.VnfRecord, kv.value)
        placement = await self._placement(vnf_id)
        for a in placement.get("assignments", []):
            self._servers[(a["site"], render.server_name(vnf_id, a["member"]))] = vnf_id
        if record.deleted or record.state is model.VnfState.DELETING:
            await self._teardown(kv, record, placement, drop_record=True)
        elif record.state is model.VnfState.PENDING:
            await self._place(kv, record)
        elif record.state is model.VnfState.PLACED:
            await self._follow_members(kv, record)
        elif record.state is model.VnfState.FAILED and placement.get("assignments"):
            await self._teardown(kv, record, placement, drop_record=False)

    async def _placement(self, vnf_id: str) -> dict[str, Any]:
        kv = await self.store.get(keys.placement(vnf_id))
        found: dict[str, Any] = json.loads(kv.value) if kv is not None else {}
        return found

    async def _write(self, kv: KeyValue, record: model.VnfRecord, *ops: Put | Delete) -> None:
        record = dataclasses.replace(record, updated_ms=now_ms())
        check = Compare(kv.key, Target.MOD, Op.EQUAL, kv.mod_revision)
        await fenced_txn(self.store, self.fence, [Put(kv.key, codec.encode(record)), *ops], [check])

    def descriptor(self, record: model.VnfRecord) -> model.Descriptor:
        desc = self._descs.get(record.id)
        if desc is None:
            desc = self._descs[record.id] = model.parse(record.descriptor)
        return desc

    async def _place(self, kv: KeyValue, record: model.VnfRecord) -> None:
        """Reserve, plan (the quota last in the chain), commit; a conflict (the snapshot
        was stale) plans again on the caught-up snapshot."""
        desc = self.descriptor(record)
        reservation, short = record.reservation, None
        if not reservation:
            try:
                reservation = await self.headroom.reserve(
                    record.tenant, model.deltas(desc), key=record.id
                )
            except REFUSED as exc:
                short = str(exc)
        planner = self.planner.with_checkers(*feasible.for_request(record.scope, short))
        record = dataclasses.replace(record, reservation=reservation)
        for attempt in range(MAX_ATTEMPTS):
            result = planner.plan(self.snap, desc, record.id)
            if not result.feasible:
                await self._infeasible(kv, record, result)
                return
            wants = render.vlan_wants(desc, result.assignments)
            try:
                vlans = await self.vlans.hold_vlans(record.id, wants)
            except errors.AllocationRefused as exc:
                refused = dataclasses.replace(result, feasible=False, reason=f"VLAN ids: {exc}")
                await self._infeasible(kv, record, refused)
                return
            landed, fresh = await self._commit(kv, record, desc, result, attempt, vlans)
            if landed or fresh is None or fresh.mod_revision != kv.mod_revision:
                return  # placed, or the record changed under us: the next step sees it
            await asyncio.sleep(0.001 * attempt)
        raise errors.Conflict(f"vnf {record.id}: {MAX_ATTEMPTS} plans in a row conflicted")

    async def _commit(
        self,
        kv: KeyValue,
        record: model.VnfRecord,
        desc: model.Descriptor,
        result: PlanResult,
        attempt: int,
        vlans: dict[str, int] | None = None,
    ) -> tuple[bool, KeyValue | None]:
        objs = render.objects(record.id, desc, result.assignments, vlans)
        needs = await imageorders.missing(self.store, desc, result.assignments)
        now = self.clock()
        members = tuple(
            model.MemberStatus(
                a.member.name, a.member.vdu, a.member.role, a.site, a.claim.host, a.claim.cell,
                placed_ms=now,
            )
            for a in result.assignments
        )
        placed = dataclasses.replace(
            record,
            state=model.VnfState.PLACED,
            reason=imageorders.waiting(needs),
            members=members,
            attempts=attempt + 1,
            updated_ms=now_ms(),
        )
        # claims, record and placement atomically, with the objects that still fit; the
        # rest in fenced batches anchored on the record (``batches``)
        share = batches.first_share(objs, 2 + len(result.sites()))
        placed = batches.progress(placed, share, len(objs))
        doc = {
            "vnf": record.id,
            "decided_ms": now_ms(),
            "assignments": [assignment_json(self.snap, a) for a in result.assignments],
            "objects": [[o.site, o.kind, o.name] for o in objs],
            "explain": result.explain(self.snap, EXPLAIN_STORED),
        }
        ops = [
            Put(kv.key, codec.encode(placed)),
            Put(keys.placement(record.id), json.dumps(doc, separators=(",", ":")).encode()),
            *(o.put() for o in objs[:share]),
        ]
        check = Compare(kv.key, Target.MOD, Op.EQUAL, kv.mod_revision)
        outcome = await commit.commit(
            self.store,
            self.fence,
            self.snap,
            result,
            ops,
            compares=[check],
            extra_reads=[Get(kv.key)],
        )
        if outcome.landed:
            await imageorders.order(self.store, self.fence, record.id, needs)
            for a in result.assignments:
                self._servers[(a.site, render.server_name(record.id, a.member.name))] = record.id
            log.info("vnf %s placed on %s", record.id, ", ".join(result.sites()))
            return True, kv
        fresh = outcome.extra[0][0] if outcome.extra and outcome.extra[0] else None
        return False, fresh

    async def _infeasible(self, kv: KeyValue, record: model.VnfRecord, result: PlanResult) -> None:
        if record.reservation:
            await self.headroom.release(record.reservation)
        failed = dataclasses.replace(
            record, state=model.VnfState.FAILED, reason=result.reason, reservation=""
        )
        doc = {
            "vnf": record.id,
            "decided_ms": now_ms(),
            "assignments": [],
            "objects": [],
            "explain": result.explain(self.snap, EXPLAIN_STORED),
        }
        await self._write(kv, failed, Put(keys.placement(record.id), json.dumps(doc).encode()))
        log.info("vnf %s: %s", record.id, result.reason)

    # -- after placement -------------------------------------------------------------------

    async def _observed(
        self, members: tuple[model.MemberStatus, ...], vnf_id: str
    ) -> list[objects.Status | None]:
        wanted = [
            keys.observed(m.site, render.SERVER, render.server_name(vnf_id, m.name))
            for m in members
        ]
        found = await batches.read_all(self.store, wanted)
        return [objects.Status.decode(kv.value) if kv is not None else None for kv in found]

    async def _follow_members(self, kv: KeyValue, record: model.VnfRecord) -> None:
        if record.reservation:
            try:
                desc = self.descriptor(record)
                await self.headroom.renew(record.reservation, model.deltas(desc))
            except REFUSED as exc:
                await self._quota_failed(kv, record, exc)
                return
        written, total = batches.pending(record)
        if written < total:
            await self._write_batch(kv, record)
            return
        seen = await self._observed(record.members, record.id)
        now = self.clock()
        members: list[model.MemberStatus] = []
        ready: dict[str, dict[str, int]] = {}
        for m, obs in zip(record.members, seen, strict=True):
            if m.given_up:
                members.append(m)
                continue
            state, message, host = objects.State.PENDING, "", ""
            if obs is not None and obs.observed_generation >= max(m.generation, objects.FIRST):
                state, message = obs.settled_state(), obs.message
                host = obs.outputs.get("host", "")
            if state is objects.State.READY:
                at = (obs.at_ms if obs is not None else 0) or now
                ready.setdefault(m.site, {})[f"{record.id}/{m.name}"] = at
            members.append(
                dataclasses.replace(m, state=state.value, message=message, observed_host=host)
            )
        for m in members:  # one move per step: the step after sees the next
            if deadlines.overdue(m, objects.State(m.state), now, self.limits):
                await self._replace_member(kv, record, m, now)
                return
        outcome, reason = deadlines.settle(self.descriptor(record), members)
        update = dataclasses.replace(record, members=tuple(members))
        if outcome is None:
            self._wake_at(record.id, deadlines.next_deadline(members, now, self.limits))
        else:
            update = dataclasses.replace(update, state=outcome, reason=reason)
        if update == record:
            return
        serving = update.state in (model.VnfState.ACTIVE, model.VnfState.DEGRADED)
        if serving:
            for site, marks in ready.items():
                await commit.mark_ready(self.store, self.fence, self.snap, site, marks)
            if record.reservation:
                # committed before the record says ACTIVE: a retry commits again, which
                # the ledger answers idempotently; usage is booked per site
                try:
                    await self.headroom.commit(
                        record.reservation, usage(self.snap, record, self.descriptor(record))
                    )
                except REFUSED as exc:
                    await self._quota_failed(kv, record, exc)
                    return
                update = dataclasses.replace(update, extra={**update.extra, COMMITTED: "1"})
        told = deadlines.outcome_event(update.state, record.id, reason)
        await self._write(kv, update, *([told] if told is not None else []))
        if serving:
            log.info("vnf %s %s %s", record.id, update.state.value, reason)
        if update.state is model.VnfState.FAILED:
            self.kick(record.id)  # tear the rest down

    async def _write_batch(self, kv: KeyValue, record: model.VnfRecord) -> None:
        """The placement's next objects (a leader killed between batches resumes here)."""
        desc = self.descriptor(record)
        found = batches.assignments(self.snap, desc, record)
        if found is None:  # the snapshot has not seen the claims yet
            self._wake_at(record.id, 0.1)
            return
        # the VLAN ids held when it was placed (held again: the same, nothing written)
        vlans = await self.vlans.hold_vlans(record.id, render.vlan_wants(desc, found))
        objs = render.objects(record.id, desc, found, vlans)
        await batches.write_next(self.store, self.fence, kv, record, objs)
        self.kick(record.id)

    async def _replace_member(
        self, kv: KeyValue, record: model.VnfRecord, m: model.MemberStatus, now: int
    ) -> None:
        """Move member ``m`` that failed or missed its deadline, or give it up
        (``deadlines``); then step again, for the next member or the outcome."""
        why = m.message if m.state == objects.State.FAILED.value else ""
        why = why or f"not READY within {self.limits.ready_timeout_ms / 1000:g} s"
        args = (self.store, self.fence, self.snap, kv, record)
        if m.attempts >= self.limits.max_attempts:
            await deadlines.give_up(*args, m, f"{why} (placement {m.attempts})", now)
        else:
            planner = self.planner.with_checkers(*feasible.for_request(record.scope, None))
            found = deadlines.decide(self.snap, planner, self.descriptor(record), record, m)
            if found.claim is None:
                await deadlines.give_up(*args, m, f"{why}; {found.reason}", now)
            else:
                await self._move(kv, record, m, found, why, now)
        self.kick(record.id)

    async def _move(
        self,
        kv: KeyValue,
        record: model.VnfRecord,
        m: model.MemberStatus,
        found: replace.Decision,
        why: str,
        now: int,
    ) -> None:
        assert found.claim is not None
        desc = self.descriptor(record)
        a = batches.assignment(desc, m, found.site, found.claim)
        # the VLAN ids of the new site's links too (where the member is now, kept)
        now_at = batches.assignments(self.snap, desc, record) or []
        vlans = await self.vlans.hold_vlans(record.id, render.vlan_wants(desc, [*now_at, a]))
        placement = await self._placement(record.id)
        self._servers[(found.site, render.server_name(record.id, m.name))] = record.id
        args = (self.store, self.fence, self.snap, kv, record, placement)
        await deadlines.move(*args, m, a, vlans, why, now)

    def _wake_at(self, vnf_id: str, delay: float | None) -> None:
        """Step ``vnf_id`` again when its first member's deadline runs out."""
        old = self._timers.pop(vnf_id, None)
        if old is not None:
            old.cancel()
        if delay is not None:
            loop = asyncio.get_running_loop()
            self._timers[vnf_id] = loop.call_later(delay + 0.01, self.kick, vnf_id)

    async def _quota_failed(
        self, kv: KeyValue, record: model.VnfRecord, exc: quota_errors.QuotaError
    ) -> None:
        """The reservation lapsed and no longer fits: the VNF may not become ACTIVE."""
        failed = dataclasses.replace(record, state=model.VnfState.FAILED, reason=f"quota: {exc}")
        await self._write(kv, failed)
        self.kick(record.id)  # tear it down; the (lapsed) reservation is released

    async def _tombstone_batch(
        self, kv: KeyValue, record: model.VnfRecord, placed: list[tuple[str, ...]], *,
        drop_record: bool,
    ) -> None:
        """The next batch of the placed objects' tombstones, counted in the record."""
        done = int(record.extra.get(batches.TOMBSTONED, "0"))
        chunk = placed[done : done + batches.BATCH]
        ops = await batches.tombstones(self.store, chunk)
        extra = {**record.extra, batches.TOMBSTONED: str(done + len(chunk))}
        if done + len(chunk) >= len(placed):
            extra["tombstones"] = "1"
        state = model.VnfState.DELETING if drop_record else record.state
        await self._write(kv, dataclasses.replace(record, extra=extra, state=state), *ops)
        if extra.get("tombstones") != "1":
            self.kick(record.id)

    async def _teardown(
        self, kv: KeyValue, record: model.VnfRecord, placement: dict[str, Any], *, drop_record: bool
    ) -> None:
        placed = [tuple(str(x) for x in o) for o in placement.get("objects", [])]
        if placed and record.extra.get("tombstones") != "1":
            await self._tombstone_batch(kv, record, placed, drop_record=drop_record)
            return
        seen = await self._observed(record.members, record.id)
        waiting = [
            m
            for m, obs in zip(record.members, seen, strict=True)
            if obs is not None and obs.state is not objects.State.DELETED and self._known(m.site)
        ]
        if any(self._up(m.site) for m in waiting):
            return  # agents are still deleting; observed events bring us back
        if waiting:  # only sites that are down hold members still: settle the others
            await self._settle_deleted(kv, record, placement, waiting)
            return
        for held in replacing.pending(record).values():  # replacements never READY
            await self.headroom.release(held)
        if record.reservation:
            # given back before the record goes: a retry gives back again, idempotently
            if record.extra.get(COMMITTED):
                await self.headroom.uncommit(
                    record.reservation, usage(self.snap, record, self.descriptor(record))
                )
            else:
                await self.headroom.release(record.reservation)
        sites = [str(a["site"]) for a in placement.get("assignments", [])]
        done: list[Put | Delete] = [Delete(keys.placement(record.id))]
        if drop_record:
            done.append(Delete(kv.key))
        else:
            final = dataclasses.replace(
                record, extra={}, members=(), reservation="", updated_ms=now_ms()
            )
            done.append(Put(kv.key, codec.encode(final)))
        await self.vlans.release_vlans(record.id)
        if not await commit.release(self.store, self.fence, self.snap, record.id, sites, done):
            self.kick(record.id)
            return
        self._descs.pop(record.id, None)
        log.info("vnf %s torn down", record.id)

    def _known(self, site: str) -> bool:
        """Registered: a site the operator forgot (``sites/<id>`` deleted) confirms nothing
        again, so its members count as deleted (the give-back rule)."""
        view = self.snap.sites.get(site)
        return view is not None and view.spec is not None

    def _up(self, site: str) -> bool:
        view = self.snap.sites.get(site)
        return view is not None and view.health == "UP"

    async def _settle_deleted(
        self,
        kv: KeyValue,
        record: model.VnfRecord,
        placement: dict[str, Any],
        waiting: list[model.MemberStatus],
    ) -> None:
        """Members remain only at sites that are down: give back the usage and drop the
        claims of every member whose deletion is confirmed (or whose site was forgotten)
        and keep the record, DELETING, with the waiting ones alone. Theirs is given back
        when their site confirms the deletion (it resumes with the tombstones) or is
        forgotten; until then their claims and usage stay held."""
        done = [m for m in record.members if m not in waiting]
        if not done:
            return
        desc, pend = self.descriptor(record), replacing.pending(record)
        extra = dict(record.extra)
        for m in done:
            key = f"{m.name}@{m.site}"
            if key in pend:  # a replacement never READY: its reservation goes
                await self.headroom.release(pend[key])
                extra.pop(replacing.REPLACING + key, None)
            elif record.reservation and record.extra.get(COMMITTED):
                gone = restoring.gone_id(record.tenant, record.id, m)
                await self.headroom.uncommit(gone, _member_usage(self.snap, record, desc, m))
            placement = replacing.placement_without(placement, record.id, m.name, m.site)
        kept = dataclasses.replace(record, members=tuple(waiting), extra=extra)
        doc = json.dumps(placement, separators=(",", ":")).encode()
        ops = [
            Put(kv.key, codec.encode(dataclasses.replace(kept, updated_ms=now_ms()))),
            Put(keys.placement(record.id), doc),
        ]
        sites = {m.site for m in done} - {m.site for m in waiting}
        check = [Compare(kv.key, Target.MOD, Op.EQUAL, kv.mod_revision)]
        if not await commit.release(self.store, self.fence, self.snap, record.id, sites, ops,
                                    compares=check):
            self.kick(record.id)
            return
        log.info("vnf %s: deleted but for %s (their sites are down)", record.id,
                 ", ".join(f"{m.name}@{m.site}" for m in waiting))


def _member_usage(
    snap: Snapshot, record: model.VnfRecord, desc: model.Descriptor, m: model.MemberStatus
) -> dict[str, SiteUsage]:
    return usage(snap, dataclasses.replace(record, members=(m,), extra={}), desc)


def usage(
    snap: Snapshot, record: model.VnfRecord, desc: model.Descriptor
) -> dict[str, SiteUsage]:
    """What the VNF's members charge to the quota, per site they are placed at (a
    failover replacement not READY yet charges nothing: its usage is not booked)."""
    per_member = model.member_deltas(desc)
    at: dict[str, dict[str, int]] = {}
    building = replacing.pending(record)
    for m in record.members:
        if f"{m.name}@{m.site}" in building:
            continue
        amounts = at.setdefault(m.site, {})
        for cls, n in per_member.get(m.name, {}).items():
            amounts[cls] = amounts.get(cls, 0) + n
    out = {}
    for site, amounts in at.items():
        view = snap.sites.get(site)
        region = view.spec.region if view is not None and view.spec is not None else ""
        out[site] = SiteUsage(region, amounts)
    return out


@registry.controller("vnf placement")
def _start(ctx: registry.Context) -> VnfController:
    vnf = ctx.settings.vnf
    limits = deadlines.Limits(int(vnf.ready_timeout_s * 1000), vnf.max_attempts)
    return VnfController(
        ctx.store,
        ctx.fence,
        headroom=ctx.headroom,
        snapshot=ctx.snapshot,
        limits=limits,
        stitching=ctx.settings.stitching,
    )
