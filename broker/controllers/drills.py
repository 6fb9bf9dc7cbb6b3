"""The live drill controller (leader only): runs ``drills/<id>`` of mode ``live``.

It follows ``drills/`` (which drills are live and not finished), ``drill-asked/`` (an
operator's abort) and ``health/`` (a real site loss aborts the drill), and steps every
unfinished drill on those changes and every ``TICK_S``. One step reads the drill, what the
state machine (``broker.drills.live``) needs — the drill VNFs' records, the events since
the cut, the sites' health; for a ``PLANNED`` drill the VNFs in scope, their roles and
what their cut members had converged — advances the machine, and writes the drill, its
cuts (``drill-cuts/<vnf>``), its lifts (the cut deleted and ``failover-asked/<vnf>``
asking the failover controller to rejoin the members and switch the active role back),
an isolating drill's quarantines (``drill-quarantine/<site>``, written with the cuts,
deleted when failback begins or the drill ends; the gateways refuse those sites),
its events and its report in ONE fenced transaction compared on the drill's revision —
as many cuts and lifts as fit (``TXN_OPS``); the others wait in the record (``pending``)
and follow in fenced transactions, each compared on the record and taking its batch off
the list in the same write, before the drill is stepped again (so a drill of hundreds of
VNFs needs no single transaction of them all, and a leader killed between batches leaves
the next one exactly the batches still to write);
a finished drill's measured promotions and restorations join the samples kept under
``reports/rto`` (``broker.drills.rto``) for the what-if's estimates.

The failover controller does the failover (invariant 14): this controller only cuts,
quarantines, watches and asks. A quarantined site's DOWN is the drill's own doing, not a
real loss: its members' ``site ... is DOWN`` losses count as the drill's. A leader
killed between two steps leaves the drill as stored; the next leader's controller lists
``drills/`` and resumes it (or ends it: ``max_duration_s`` is counted from the cut,
across leaders).

Invariant: every write is fenced and compared on the drill as read, so a deposed leader
or a concurrent step never lands a drill step twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from broker import errors
from broker.controllers import registry
from broker.controllers.failover import FOLLOWED
from broker.drills import live, report, rto, whatif
from broker.election.fencing import fenced_txn
from broker.models import codec, event, objects
from broker.models import vnf as model
from broker.models.site import Health, SiteHealth
from broker.placement import render
from broker.settings import BrokerSettings
from broker.store import follow, keys
from broker.store.protocol import Compare, Delete, Get, KeyValue, Op, Put, Store, Target

log = logging.getLogger(__name__)

TICK_S = 0.25
MAX_VNFS = 1000
"""A live drill's VNFs at most: its record (targets, report) must fit one etcd value."""
TXN_OPS = 120
"""Operations one drill transaction carries at most (etcd's default limit is 128)."""
PENDING = "pending"
"""The drill record's cuts and lifts still to write, in order (``_batched``)."""


def now_ms() -> int:
    return int(time.time() * 1000)


class DrillController:
    def __init__(self, store: Store, fence: int, settings: BrokerSettings) -> None:
        self.store, self.fence, self.settings = store, fence, settings
        self.health: dict[str, Health] = {}
        self.unfinished: set[str] = set()
        self._wake = asyncio.Event()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._follow(keys.DRILLS, self._on_drill))
            tg.create_task(self._follow(keys.DRILL_ASKED, lambda _k, _v: self._wake.set()))
            tg.create_task(self._follow(keys.HEALTH, self._on_health))
            tg.create_task(self._work())

    async def _follow(self, prefix: str, handle: Any) -> None:
        async for key, value in follow.changes(self.store, prefix):
            handle(key, value)

    def _on_drill(self, key: str, value: bytes) -> None:
        drill_id = keys.name_in(keys.DRILLS, key)
        doc = json.loads(value) if value else {}
        if doc.get("mode") == "live" and (
            doc.get("state") in live.ACTIVE_STATES or doc.get(PENDING)
        ):
            self.unfinished.add(drill_id)
            self._wake.set()
        else:
            self.unfinished.discard(drill_id)

    def _on_health(self, key: str, value: bytes) -> None:
        site = keys.name_in(keys.HEALTH, key)
        self.health[site] = codec.decode(SiteHealth, value).state if value else Health.UNKNOWN
        self._wake.set()

    async def _work(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            except TimeoutError:
                pass
            self._wake.clear()
            for drill_id in sorted(self.unfinished):
                try:
                    await self.step(drill_id)
                except (errors.Conflict, errors.StoreUnavailable) as exc:
                    log.info("drill %s: %s; again", drill_id, exc)

    # -- one step of one drill -------------------------------------------------------

    async def step(self, drill_id: str) -> None:
        found = await self.store.txn(
            [], [Get(keys.drill(drill_id)), Get(keys.drill_asked(drill_id))]
        )
        doc_kv, ask_kv = (r[0] if r else None for r in found.responses)
        if doc_kv is None:
            self.unfinished.discard(drill_id)
            return
        doc: dict[str, Any] = json.loads(doc_kv.value)
        if doc.get(PENDING):  # the last step's cuts and lifts first, whatever its state
            await self._write_pending(doc_kv, doc)
            return
        if doc.get("mode") != "live" or doc.get("state") not in live.ACTIVE_STATES:
            self.unfinished.discard(drill_id)
            return
        d = live.load(doc)
        now = now_ms()
        evs = await self._events(d) if d.state != live.PLANNED else []
        view = await self._view(d, doc, evs, ask_kv)
        after, intents = live.advance(d, view, now)
        if after == d and not intents:
            return
        new = {**doc, **live.dump(after)}
        notes = [
            event.new(i.kind, drill_id, i.message) for i in intents if isinstance(i, live.Note)
        ]
        if after.state != d.state or after.measured_ms != d.measured_ms:
            new["report"] = report.build(after, [*evs, *notes], after.at_measure)
        ops: list[Put | Delete] = [Put(keys.event(e.id), codec.encode(e)) for e in notes]
        checks = [Compare(doc_kv.key, Target.MOD, Op.EQUAL, doc_kv.mod_revision)]
        if after.state in live.TERMINAL and "report" in new:  # what-ifs estimate from it
            checks.append(await self._measured(ops, new["report"], drill_id, now))
        writes = [w for i in intents for w in _encode(i)]
        now_, new[PENDING] = _batched(writes, TXN_OPS - 1 - len(ops))
        ops += [Put(keys.drill(drill_id), json.dumps(new).encode()), *self._ops(d.id, now_)]
        await fenced_txn(self.store, self.fence, ops, checks)
        if after.state != d.state:
            log.info("drill %s: %s -> %s %s", drill_id, d.state, after.state, after.reason)

    async def _write_pending(self, doc_kv: KeyValue, doc: dict[str, Any]) -> None:
        """The next batch of the drill's pending cuts and lifts, with the rest left in the
        record, compared on the record as read: each batch lands once, none is lost."""
        now_, rest = _batched(doc[PENDING], TXN_OPS - 1)
        new = {**doc, PENDING: rest}
        ops = [Put(doc_kv.key, json.dumps(new).encode()), *self._ops(doc["id"], now_)]
        check = Compare(doc_kv.key, Target.MOD, Op.EQUAL, doc_kv.mod_revision)
        await fenced_txn(self.store, self.fence, ops, [check])
        log.info("drill %s: %d cuts/lifts written, %d left", doc["id"], len(now_), len(rest))

    async def _measured(
        self, ops: list[Put | Delete], rep: dict[str, Any], drill_id: str, now: int
    ) -> Compare:
        """Append the drill's measured values to ``reports/rto`` (an op added to
        ``ops``); the compare that keeps a concurrent update from being overwritten."""
        kv = await self.store.get(keys.RTO_MEASURED)
        promote, restore = rto.from_report(rep)
        kept = rto.merge(
            json.loads(kv.value) if kv else {}, promote, restore, drill=drill_id, at_ms=now
        )
        ops.append(Put(keys.RTO_MEASURED, json.dumps(kept).encode()))
        return Compare(keys.RTO_MEASURED, Target.MOD, Op.EQUAL, kv.mod_revision if kv else 0)

    async def _view(
        self, d: live.Drill, doc: dict[str, Any], evs: list[event.Event], ask: KeyValue | None
    ) -> live.View:
        asked = json.loads(ask.value).get("by", "an operator") if ask is not None else ""
        if d.state == live.PLANNED:
            return await self._plan(d, doc, asked)
        records = await self._records(t.vnf for t in d.targets)
        lost = {e.subject for e in evs if e.kind == report.LOST and _drill_loss(d, e.message)}
        vnfs = {
            r.id: live.VnfView(
                r.state.value,
                {f"{m.name}@{m.site}": m.role for m in r.members},
                r.reason,
                r.id in lost,
            )
            for r in records
        }
        sites = set(d.sites) | {m.site for r in records for m in r.members}
        if d.isolate:  # the drill's own quarantine takes its sites DOWN: not a real loss
            sites -= set(d.sites)
        down = sorted(s for s in sites if self.health.get(s) is Health.DOWN)
        back = all(self.health.get(s) is Health.UP for s in d.sites) if d.isolate else True
        return live.View(vnfs, down, asked, back=back)

    async def _records(self, ids: Iterable[str]) -> list[model.VnfRecord]:
        gets = [Get(keys.vnf(v)) for v in ids]
        out: list[model.VnfRecord] = []
        for i in range(0, len(gets), 100):
            found = await self.store.txn([], gets[i : i + 100])
            out += [codec.decode(model.VnfRecord, r[0].value) for r in found.responses if r]
        return out

    async def _events(self, d: live.Drill) -> list[event.Event]:
        """The drill's and its VNFs' events since just before the cut."""
        subjects = {t.vnf for t in d.targets} | {d.id}
        kvs, _, _ = await self.store.get_range(keys.EVENTS, after=f"{d.started_ms - 1:013d}")
        evs = (codec.decode(event.Event, kv.value) for kv in kvs)
        return [e for e in evs if e.subject in subjects]

    # -- the start: scope, targets, refusals -----------------------------------------

    async def _plan(self, d: live.Drill, doc: dict[str, Any], asked: str) -> live.View:
        if asked:
            return live.View({}, refusal=f"aborted by {asked} before it started")
        sites = set(d.sites)  # the API resolved zones and regions to sites
        kvs, _ = await self.store.get_prefix(keys.VNFS)
        records = [codec.decode(model.VnfRecord, kv.value) for kv in kvs]
        records = [r for r in records if not r.deleted and r.state in FOLLOWED]
        chosen = [r for r in records if _chosen(r, doc, sites)]
        refusal = self._refusal(d, sites, records, chosen)
        estimates = {o["vnf"]: o.get("rto_s") for o in doc.get("result", {}).get("vnfs", ())}
        targets = [await self._target(r, sites, estimates.get(r.id)) for r in chosen]
        return live.View({}, refusal=refusal, candidates=targets if not refusal else ())

    def _refusal(
        self,
        d: live.Drill,
        sites: set[str],
        records: list[model.VnfRecord],
        chosen: list[model.VnfRecord],
    ) -> str:
        others = sorted(self.unfinished - {d.id})
        if others:
            return f"another drill is running: {', '.join(others)}"
        down = sorted(s for s in sites if self.health.get(s) is not Health.UP)
        if down:
            return f"a site of the scope is not UP: {', '.join(down)}"
        busy = sorted(r.id for r in records if r.state.value in live.UNSETTLED)
        if busy:
            return f"a real failover is under way: {', '.join(busy[:5])}"
        if len(chosen) > MAX_VNFS:
            return f"{len(chosen)} VNFs in scope; a live drill takes at most {MAX_VNFS}"
        whole = sorted(r.id for r in chosen if all(m.site in sites for m in r.members))
        if whole:
            return f"every member of {', '.join(whole[:5])} is in the scope: it would lose service"
        if d.isolate:
            out = {r.id for r in records} - {r.id for r in chosen}
            hit = sorted(
                r.id for r in records if r.id in out and all(m.site in sites for m in r.members)
            )
            if hit:
                return (
                    f"isolate: site would take {', '.join(hit[:5])} out of service, and "
                    "it is not in the drill"
                )
        return ""

    async def _target(
        self, rec: model.VnfRecord, sites: set[str], estimate: float | None
    ) -> live.Target:
        cut = [m for m in rec.members if m.site in sites]
        rpo, notes = 0.0, []
        for m in cut:
            server = render.server_name(rec.id, m.name)
            found = await self.store.txn(
                [],
                [
                    Get(keys.desired(m.site, render.SERVER, server)),
                    Get(keys.observed(m.site, render.SERVER, server)),
                ],
            )
            want_kv, seen_kv = (r[0] if r else None for r in found.responses)
            want = objects.Desired.decode(want_kv.value).generation if want_kv else 0
            seen = objects.Status.decode(seen_kv.value) if seen_kv else None
            if seen is not None and seen.observed_generation >= want:
                notes.append(f"{m.name}: generation {want} converged")
                continue
            age = (now_ms() - seen.at_ms) / 1000 if seen is not None and seen.at_ms else None
            rpo = max(rpo, age or 0.0)
            have = seen.observed_generation if seen is not None else 0
            notes.append(f"{m.name}: generation {have} of {want} converged")
        return live.Target(
            rec.id,
            rec.tenant,
            tuple(f"{m.name}@{m.site}" for m in cut),
            {f"{m.name}@{m.site}": m.role for m in rec.members},
            round(rpo, 3),
            "; ".join(notes),
            estimate,
        )

    # -- the writes ------------------------------------------------------------------

    def _ops(self, drill_id: str, writes: list[dict[str, Any]]) -> list[Put | Delete]:
        """The etcd writes of encoded cuts, lifts and quarantines (``_encode``)."""
        ops: list[Put | Delete] = []
        for w in writes:
            if w["op"] == "quarantine":
                held = {"drill": drill_id, "at_ms": w["at_ms"]}
                ops.append(Put(keys.drill_quarantine(w["site"]), json.dumps(held).encode()))
            elif w["op"] == "release":
                ops.append(Delete(keys.drill_quarantine(w["site"])))
            elif w["op"] == "cut":
                cut = {"drill": drill_id, "sites": w["sites"], "at_ms": w["at_ms"]}
                ops.append(Put(keys.drill_cut(w["vnf"]), json.dumps(cut).encode()))
            else:
                ask = {
                    "rejoin": w["rejoin"],
                    "to_site": w["to_site"],
                    "switch": bool(w["to_site"]),
                    "by": f"drill {drill_id}",
                    "at_ms": w["at_ms"],
                }
                ops.append(Delete(keys.drill_cut(w["vnf"])))
                ops.append(Put(keys.failover_asked(w["vnf"]), json.dumps(ask).encode()))
        return ops


def _encode(it: live.Intent) -> list[dict[str, Any]]:
    """An intent's writes as the drill record keeps them until written (stamped now)."""
    at = now_ms()
    if isinstance(it, live.Cut):
        return [{"op": "cut", "vnf": it.vnf, "sites": list(it.sites), "at_ms": at}]
    if isinstance(it, live.Lift):
        rejoin, to = list(it.rejoin), it.to_site
        return [{"op": "lift", "vnf": it.vnf, "rejoin": rejoin, "to_site": to, "at_ms": at}]
    if isinstance(it, live.Quarantine | live.Release):
        op = "quarantine" if isinstance(it, live.Quarantine) else "release"
        return [{"op": op, "site": site, "at_ms": at} for site in it.sites]
    return []


def _drill_loss(d: live.Drill, message: str) -> bool:
    """A ``vnf.member_lost`` the drill caused: its cut, or its quarantine's site DOWN."""
    return "drill" in message or (
        d.isolate and any(f"site {s} is DOWN" in message for s in d.sites)
    )


def _batched(
    writes: list[dict[str, Any]], room: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The first ``writes`` that fit ``room`` operations (a cut is one, a lift two), and
    the rest."""
    used, n = 0, 0
    for w in writes:
        cost = 2 if w["op"] == "lift" else 1
        if used + cost > room:
            break
        used, n = used + cost, n + 1
    return writes[:n], writes[n:]


def _chosen(rec: model.VnfRecord, doc: dict[str, Any], sites: set[str]) -> bool:
    return any(m.site in sites for m in rec.members) and whatif.Selector.of(doc).matches(rec)


@registry.controller("drills")
def _start(ctx: registry.Context) -> DrillController:
    return DrillController(ctx.store, ctx.fence, ctx.settings)
