"""The failover controller (leader only): placed VNFs follow their sites and members.

It follows ``health/`` (site UP/DOWN), ``observed/`` (the members' servers) and ``vnfs/``.
For a followed VNF (ACTIVE, DEGRADED, FAILING_OVER, HEALING) one step reads the record,
its failover machines (``failover/<vnf>``; new ones from the record the first time), the
sites' health, the members' observed servers and an operator's switchover asked for
(``failover-asked/<vnf>``, consumed in the same transaction), turns what changed into machine events
(``broker.failover.machine``), and writes everything in ONE fenced transaction compared
on the record's and the machines' revisions: role changes as new generations of the
servers' desired objects (the lost active's demotion included, so its site resumes with
it), tombstones, the events, the machines and the record (state, reason, members, roles).
A leader killed between steps loses nothing: the next one reads the machines back.

Priority lane (``lane.Lane``): when a site goes DOWN, each VNF whose active member was
there holds the lane until its promotion is reported (its phase leaves FAILING_OVER).
Those VNFs are stepped by a worker of their own, never queued behind other steps, their
etcd calls on the store's urgent lane (``store.urgency``); every
other step (restores, drains, deadlines, replacements READY) waits while the lane is held,
and so does the replacer before each re-placement.

Restoring redundancy (``restore: auto``): the replacements the machines ask for go to the
``replacing.Replacer`` (limits, priority, placement, quota reservation). When a replacement
reports READY the step books its quota usage at its site (commits its reservation) and
frees its slot; its lost predecessor is then tombstoned; when that member's site confirms
the deletion — or the operator forgets the site (``sites/<id>`` deleted) — the step gives
its usage back and drops its claim and its placement entries. A site being drained
(``drains/<site>``, from the API) is emptied one VNF at a time (``drain.Drains``).

Invariant: every write is fenced and compared on what the step read, so two steps of one
VNF (or a deposed leader) never both land; a lost member's usage is given back only after
its deletion is confirmed, and a replacement's is booked only once it is READY.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from broker.controllers import registry, replacing, restoring
from broker.controllers.drain import Drains
from broker.controllers.lane import Lane
from broker import errors
from broker.election.fencing import fenced_txn
from broker.failover import machine, policy
from broker.models import codec, event, objects
from broker.models import vnf as model
from broker.models.site import Health, SiteHealth
from broker.placement import render
from broker.placement.snapshot import Live
from broker.quotas.headroom import Headroom, Unlimited
from broker.settings import BrokerSettings
from broker.store import follow, keys, urgency
from broker.store.protocol import Compare, Delete, Get, Op, Put, Store, Target

log = logging.getLogger(__name__)

FOLLOWED = frozenset(
    {
        model.VnfState.ACTIVE,
        model.VnfState.DEGRADED,
        model.VnfState.FAILING_OVER,
        model.VnfState.HEALING,
    }
)
TICK_S = 0.5
"""How often VNFs with a loss in grace or a deadline running are stepped without news."""
PARALLEL = 16
"""Steps of the background lane under way at once."""
URGENT_PARALLEL = 32
"""Steps of VNFs promoting (the priority lane) under way at once."""
DRILL_CUT = "a live drill's cut: its member still runs and rejoins at failback"
"""Why a member lost to a drill's cut is not re-placed (its replacement would delete it)."""


def now_ms() -> int:
    return int(time.time() * 1000)


class FailoverController:
    def __init__(
        self,
        store: Store,
        fence: int,
        settings: BrokerSettings,
        *,
        headroom: Headroom | None = None,
        snapshot: Live | None = None,
        lane: Lane | None = None,
    ) -> None:
        self.store, self.fence, self.settings = store, fence, settings
        self.headroom: Headroom = headroom or Unlimited()
        self._own_live = snapshot is None
        self.live = snapshot or Live(store)
        self.lane = lane or Lane()
        self.replacer = replacing.Replacer(
            store, fence, settings, self.headroom, self.live, self._mark, lane=self.lane
        )
        self.drains = Drains(self._mark)
        self.replacer.avoid = lambda: self.drains.sites
        self.health: dict[str, Health] = {}
        self.forgotten: set[str] = set()
        """Sites the operator forgot (``sites/<id>`` deleted): their members are gone."""
        self._at_site: dict[str, set[str]] = {}
        self._active_at: dict[str, set[str]] = {}
        """Site → the VNFs whose member there was wanted active when last indexed."""
        self._servers: dict[tuple[str, str], str] = {}
        self._busy: set[str] = set()
        self._dirty: set[str] = set()
        self._stepping: set[str] = set()
        """VNFs with a step under way (a VNF is never stepped twice at once)."""
        self._wake = asyncio.Event()
        self._wake_urgent = asyncio.Event()
        self._clear_waiter: asyncio.Task[None] | None = None

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            if self._own_live:
                tg.create_task(self.live.run())
            tg.create_task(self._follow(keys.HEALTH, self._on_health))
            tg.create_task(self._follow(keys.SITES, self._on_site))
            tg.create_task(self._follow(keys.VNFS, self._on_vnf))
            tg.create_task(self._follow(keys.OBSERVED, self._on_observed))
            tg.create_task(self._follow(keys.FAILOVER_ASKED, self._on_asked))
            tg.create_task(self._follow(keys.DRILL_CUTS, self._on_asked))
            tg.create_task(self._follow(keys.DRAINS, self._on_drain))
            tg.create_task(self._tick())
            tg.create_task(self._work(urgent=True))
            tg.create_task(self._work(urgent=False))
            tg.create_task(self.replacer.run())

    # -- what to look at -------------------------------------------------------------

    async def _follow(self, prefix: str, handle: Callable[[str, bytes], None]) -> None:
        async for key, value in follow.changes(self.store, prefix):
            handle(key, value)

    def _mark(self, vnf_id: str) -> None:
        self._dirty.add(vnf_id)
        self._wake.set()
        if self.lane.holds(promotion_key(vnf_id)):
            self._wake_urgent.set()

    def _mark_site(self, site: str) -> None:
        for vnf_id in self._at_site.get(site, ()):
            self._mark(vnf_id)

    def _on_health(self, key: str, value: bytes) -> None:
        site = keys.name_in(keys.HEALTH, key)
        self.health[site] = codec.decode(SiteHealth, value).state if value else Health.UNKNOWN
        if self.health[site] is Health.DOWN:  # their promotions go first
            for vnf_id in self._active_at.get(site, ()):
                self.lane.hold(promotion_key(vnf_id))
        self._mark_site(site)

    def _on_site(self, key: str, value: bytes) -> None:
        site = keys.name_in(keys.SITES, key)
        (self.forgotten.discard if value else self.forgotten.add)(site)
        self._mark_site(site)

    def _on_drain(self, key: str, value: bytes) -> None:
        site = keys.name_in(keys.DRAINS, key)
        self.drains.set(site, bool(value))

    def _on_vnf(self, key: str, value: bytes) -> None:
        if not value:  # the record is gone: its machines go too
            self._mark(keys.name_in(keys.VNFS, key))
            return
        rec = codec.decode(model.VnfRecord, value)
        if rec.deleted or rec.state not in FOLLOWED:
            return
        self.index(rec)
        self._mark(rec.id)

    def index(self, rec: model.VnfRecord) -> None:
        for m in rec.members:
            self._at_site.setdefault(m.site, set()).add(rec.id)
            active = self._active_at.setdefault(m.site, set())
            (active.add if m.role == machine.ACTIVE else active.discard)(rec.id)
            self._servers[(m.site, render.server_name(rec.id, m.name))] = rec.id

    def _on_asked(self, key: str, value: bytes) -> None:
        """An operator's ask, or a drill's cut set or lifted: step the VNF."""
        prefix = keys.DRILL_CUTS if key.startswith(keys.DRILL_CUTS) else keys.FAILOVER_ASKED
        if value or prefix == keys.DRILL_CUTS:
            self._mark(keys.name_in(prefix, key))

    def _on_observed(self, key: str, value: bytes) -> None:
        site, kind, name = keys.split_object(key)
        vnf_id = self._servers.get((site, name)) if kind == render.SERVER else None
        if vnf_id is not None:
            self._mark(vnf_id)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for vnf_id in list(self._busy):
                self._mark(vnf_id)
            self.drains.tick()

    async def _work(self, *, urgent: bool) -> None:
        """Step marked VNFs: the urgent worker those holding the lane (promotions), the
        other worker the rest, and only while the lane is clear."""
        wake = self._wake_urgent if urgent else self._wake
        while True:
            await wake.wait()
            wake.clear()
            while batch := self._take(urgent):
                self._stepping.update(batch)
                try:
                    # the urgent steps' etcd calls skip the store's queue too
                    with urgency.urgent() if urgent else contextlib.nullcontext():
                        await asyncio.gather(*(self._guarded(v) for v in batch))
                finally:
                    self._stepping.difference_update(batch)
                if self._dirty:  # marked again while being stepped: the other worker too
                    self._wake.set()
                    self._wake_urgent.set()
                if not urgent:
                    await self.lane.clear()

    def _take(self, urgent: bool) -> list[str]:
        """The next VNFs to step for the urgent worker or the other one."""
        held = self.lane.holds
        ready = [v for v in self._dirty if v not in self._stepping]
        if urgent:
            batch = [v for v in ready if held(promotion_key(v))][:URGENT_PARALLEL]
        elif self.lane.pending():
            batch = []  # the lane's clearing wakes this worker (``_wait_clear``)
            self._wait_clear()
        else:
            batch = ready[:PARALLEL]
        self._dirty.difference_update(batch)
        return batch

    def _wait_clear(self) -> None:
        """Wake the background worker once the lane is clear."""

        async def wait() -> None:
            await self.lane.clear()
            self._wake.set()

        if self._clear_waiter is None or self._clear_waiter.done():
            self._clear_waiter = asyncio.get_running_loop().create_task(wait())

    async def _guarded(self, vnf_id: str) -> None:
        try:
            await self.step(vnf_id)
        except (errors.Conflict, errors.StoreUnavailable, restoring.TEMPORARY) as exc:
            log.info("failover %s: %s; again", vnf_id, exc)
            self._mark(vnf_id)

    # -- one step of one VNF ---------------------------------------------------------

    async def step(self, vnf_id: str) -> None:
        found = await self.store.txn(
            [],
            [
                Get(keys.vnf(vnf_id)),
                Get(keys.failover(vnf_id)),
                Get(keys.failover_asked(vnf_id)),
                Get(keys.drill_cut(vnf_id)),
                Get(keys.placement(vnf_id)),
            ],
        )
        rec_kv, fo_kv, ask_kv, cut_kv, pl_kv = (r[0] if r else None for r in found.responses)
        if rec_kv is None:
            self._forget(vnf_id)
            if fo_kv is not None or ask_kv is not None:
                gone = [Delete(kv.key) for kv in (fo_kv, ask_kv) if kv is not None]
                await fenced_txn(self.store, self.fence, gone)
            return
        rec = codec.decode(model.VnfRecord, rec_kv.value)
        if rec.deleted or rec.state not in FOLLOWED:
            self._forget(vnf_id)
            return
        self.index(rec)
        desc = model.parse(rec.descriptor)
        before = policy.load(fo_kv.value) if fo_kv else policy.machines(rec, desc, self.settings)
        seen = await self._observed(rec, before)
        asked = json.loads(ask_kv.value) if ask_kv is not None else None
        cut = frozenset(json.loads(cut_kv.value)["sites"]) if cut_kv is not None else frozenset()
        drain = self.drains.asked(vnf_id)
        after, actions = self._run(before, seen, now_ms(), asked, cut, drain)
        state = policy.vnf_phase([m.phase for m in after.values()])
        reason = "; ".join(f"{vdu}: {m.reason}" for vdu, m in after.items() if m.reason)
        book = restoring.Booking(self.store, self.fence, self.headroom, self.live)
        update, pl_ops = await book.settle(rec, desc, before, after, actions, pl_kv)
        update = dataclasses.replace(update, state=state, reason=reason)
        busy = state is not model.VnfState.ACTIVE or any(
            m.lost_ms is not None for mach in after.values() for m in mach.members
        )
        (self._busy.add if busy else self._busy.discard)(vnf_id)
        if state is not model.VnfState.FAILING_OVER:
            self.lane.release(promotion_key(vnf_id))
        self.drains.seen(vnf_id, after)
        if after == before and update == rec and fo_kv is not None and ask_kv is None:
            self._ask_replacements(vnf_id, after)
            return
        ops: list[Put | Delete] = [*await self._ops(vnf_id, actions), *pl_ops]
        checks = [*book.checks]
        if ask_kv is not None:  # consumed in the same transaction: asked once, done once
            ops.append(Delete(ask_kv.key))
            checks.append(Compare(ask_kv.key, Target.MOD, Op.EQUAL, ask_kv.mod_revision))
        ops += [
            Put(keys.vnf(vnf_id), codec.encode(dataclasses.replace(update, updated_ms=now_ms()))),
            Put(keys.failover(vnf_id), policy.dump(after)),
        ]
        checks += [
            Compare(rec_kv.key, Target.MOD, Op.EQUAL, rec_kv.mod_revision),
            Compare(
                keys.failover(vnf_id), Target.MOD, Op.EQUAL, fo_kv.mod_revision if fo_kv else 0
            ),
        ]
        landed = await fenced_txn(self.store, self.fence, ops, checks)
        book.landed(landed.revision)
        self.drains.took(vnf_id, drain)
        for key in book.finished:
            self.replacer.finish(vnf_id, key)
        self._ask_replacements(vnf_id, after)
        if state is not rec.state:
            log.info("vnf %s: %s -> %s %s", vnf_id, rec.state.value, state.value, reason)

    def _forget(self, vnf_id: str) -> None:
        self._busy.discard(vnf_id)
        self.lane.release(promotion_key(vnf_id))
        self.replacer.recoveries.forget(vnf_id)
        self.drains.seen(vnf_id, {})

    def _ask_replacements(self, vnf_id: str, machines: dict[str, machine.Vnf]) -> None:
        """Hand every replacement the machines want to the replacer (idempotent)."""
        for mach in machines.values():
            for m in mach.members:
                if m.replace_wanted:
                    self.replacer.ask(vnf_id, m.key, mach.priority, m.lost_ms or now_ms())

    def _run(
        self,
        machines: dict[str, machine.Vnf],
        seen: dict[str, objects.Status],
        now: int,
        asked: dict[str, Any] | None = None,
        cut: frozenset[str] = frozenset(),
        drain: str = "",
    ) -> tuple[dict[str, machine.Vnf], list[tuple[str, machine.Action]]]:
        out: dict[str, machine.Vnf] = {}
        actions: list[tuple[str, machine.Action]] = []
        for vdu, mach in machines.items():
            events: list[machine.Event] = [*self._events(mach, seen, cut), machine.Tick()]
            if asked is not None:  # a drill's failback: its cut members rejoin first
                events += [machine.Rejoin(k) for k in asked.get("rejoin", ()) if "@" in k]
            events += _operator_events(mach, asked, drain)
            for ev in events:
                try:
                    result = machine.step(mach, ev, now)
                except machine.Refused as exc:  # the VNF changed since the API checked
                    log.warning("vnf %s: %s is refused: %s", mach.id, type(ev).__name__, exc)
                    continue
                mach = result.vnf
                for a in result.actions:
                    if not isinstance(a, machine.Replace):
                        actions.append((vdu, a))
                    elif a.key.rsplit("@", 1)[1] in cut:  # the member still runs
                        events.append(machine.PlaceFailed(a.key, DRILL_CUT))
            out[vdu] = mach
        return out, actions

    def _events(
        self, mach: machine.Vnf, seen: dict[str, objects.Status], cut: frozenset[str]
    ) -> Iterator[machine.Event]:
        """What the sites' health, a live drill's cut (``_cut``) and the observed servers
        say, as machine events."""
        if cut and any(self.health.get(m.site) is Health.DOWN for m in mach.members):
            cut = frozenset()  # a real loss outranks a drill: its cut members serve again
            yield from (machine.Rejoin(m.key) for m in mach.members if _drilled(m))
        for m in mach.members:
            st = seen.get(m.key)
            if m.site in self.forgotten:
                if m.condemned:
                    yield machine.Deleted(m.key)
                elif m.lost_ms is None:
                    yield machine.Lost(m.key, f"site {m.site} was forgotten")
                continue
            if self.health.get(m.site) is Health.DOWN:
                if m.lost_ms is None and not m.condemned:
                    yield machine.Lost(m.key, f"site {m.site} is DOWN")
                continue
            if m.site in cut:
                yield from _cut(mach, m, cut)
            if st is None or st.observed_generation < objects.FIRST:
                continue
            if st.state is objects.State.FAILED and not st.temporary:
                if m.lost_ms is None and not m.condemned:
                    yield machine.Lost(m.key, st.message or "server failed", gone=st.gone)
            elif st.state is objects.State.READY:
                if m.lost_ms is not None and not m.condemned and m.site not in cut:
                    yield machine.Back(m.key)
                role = st.outputs.get("role", "")
                if not m.ready or (role and role != m.applied_role):
                    yield machine.Observed(m.key, True, role)
            elif st.state is objects.State.DELETED and m.deleting:
                yield machine.Deleted(m.key)

    async def _observed(
        self, rec: model.VnfRecord, machines: dict[str, machine.Vnf]
    ) -> dict[str, objects.Status]:
        """The members' servers' statuses; one of a generation older than the member's
        placement is of its server's earlier life (gone, rebuilt since): left out."""
        members = [m for mach in machines.values() for m in mach.members]
        gets = [
            Get(keys.observed(m.site, render.SERVER, render.server_name(rec.id, m.name)))
            for m in members
        ]
        if not gets:
            return {}
        found = await self.store.txn([], gets)
        placed = {f"{m.name}@{m.site}": m.generation for m in rec.members}
        seen = {
            m.key: objects.Status.decode(r[0].value)
            for m, r in zip(members, found.responses, strict=True)
            if r
        }
        return {k: st for k, st in seen.items() if st.observed_generation >= placed.get(k, 0)}

    async def _ops(self, vnf_id: str, actions: list[tuple[str, machine.Action]]) -> list[Put]:
        """The writes that carry out ``actions``: roles, tombstones, events."""
        desired: dict[str, objects.Desired] = {}
        ops: list[Put] = []

        async def current(key: str) -> objects.Desired | None:
            if key not in desired:
                kv = await self.store.get(key)
                if kv is None:
                    return None
                desired[key] = objects.Desired.decode(kv.value)
            return desired[key]

        for vdu, action in actions:
            if isinstance(action, machine.SetRole):
                name, site = action.key.rsplit("@", 1)
                key = keys.desired(site, render.SERVER, render.server_name(vnf_id, name))
                obj = await current(key)
                if obj is not None and not obj.deleted:
                    meta = {**obj.spec.get("metadata", {}), policy.ROLE_KEY: action.role}
                    desired[key] = obj.revise({**obj.spec, "metadata": meta})
            elif isinstance(action, machine.Delete):
                name, site = action.key.rsplit("@", 1)
                server = render.server_name(vnf_id, name)
                ports, _ = await self.store.get_prefix(keys.desired(site, "port", f"{server}-"))
                for key in [keys.desired(site, render.SERVER, server), *(p.key for p in ports)]:
                    obj = await current(key)
                    if obj is not None and not obj.deleted:
                        desired[key] = obj.tombstone()
            elif isinstance(action, machine.Record):
                ev = event.new(
                    action.type.value, vnf_id, f"{vdu}: {action.reason}", at_ms=action.at_ms
                )
                ops.append(Put(keys.event(ev.id), codec.encode(ev)))
        return [Put(key, obj.encode()) for key, obj in desired.items()] + ops


def promotion_key(vnf_id: str) -> str:
    """The lane key of a VNF whose active member's site went DOWN, held until its
    promotion is reported."""
    return f"promote:{vnf_id}"


def _drilled(m: machine.Member) -> bool:
    """Lost to a drill's cut (not to anything real)."""
    return m.lost_reason.startswith("drill:")


def _cut(mach: machine.Vnf, m: machine.Member, cut: frozenset[str]) -> Iterator[machine.Event]:
    """A live drill's cut member is lost for this VNF alone — but it still runs and is
    reachable, so an active one is switched over first (demoted, and the standby outside
    the cut promoted once the demotion is reported: no dual-active, even for a moment),
    and its loss follows once it no longer reports the active role."""
    if m.lost_ms is not None or m.condemned:
        return
    if m.role == machine.ACTIVE:
        to = sorted(s.site for s in mach.members if s.serving and s.site not in cut)
        if to and not mach.promote_after:
            yield machine.Failover(to[0])
        if to:
            return
    elif m.applied_role == machine.ACTIVE and m.ready:
        return  # its demotion is not reported yet
    yield machine.Lost(m.key, f"drill: site {m.site} cut")


def _operator_events(
    mach: machine.Vnf, asked: dict[str, Any] | None, drain: str
) -> list[machine.Event]:
    """The operator's asks that apply to this VDU's machine."""
    out: list[machine.Event] = []
    standby = mach.policy.model in ("active-standby", "n+k")
    if asked is not None:
        if asked.get("action") == "heal":
            if any(
                m.condemned and not m.replace_wanted and not m.replaced_by for m in mach.members
            ):
                out.append(machine.Heal())
        elif standby and asked and asked.get("switch", True):
            out.append(machine.Failover(str(asked.get("to_site", ""))))
    if drain and any(m.site == drain and not m.condemned for m in mach.members):
        out.append(machine.Drain(drain))
    return out


@registry.controller("failover")
def _start(ctx: registry.Context) -> FailoverController:
    return FailoverController(
        ctx.store,
        ctx.fence,
        ctx.settings,
        headroom=ctx.headroom,
        snapshot=ctx.snapshot,
        lane=ctx.lane,
    )
