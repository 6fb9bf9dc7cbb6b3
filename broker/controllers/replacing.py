"""Restoring redundancy (issue 10, ``restore: auto``): the lost members' replacements.

The failover machines ask for a replacement (``machine.Replace``); the failover controller
hands each to ``Replacer.ask``, and the replacer carries them out under the limits
(``failover.limits.Recoveries``: priority first, at most ``failover.max_replacements``
under way federation-wide and ``failover.max_per_site`` per target site). One
replacement: ``replace.decide`` on the leader's placement snapshot (the Planner's own
checkers and scorers, the creator's scope, anti-affinity and latency against the members
that remain, the sites and hosts the machine avoids, drained sites); a catalogue image
named directly and absent at the chosen site is ordered there (the site joins the image's
targets) and waited for, a declared ``sw_image`` the site lacks is ordered once the
replacement lands, as placement orders it (``imageorders``); the tenant's quota for the one member
is reserved (not for a member rebuilt at its own site — a server gone from a site that
serves: it keeps the usage or the reservation it held, and its server's new generation
re-creates it); then ONE fenced transaction — compared on the VNF record, the machines and
the chosen site's inventory and claims — writes the claim, the member's desired objects
(the shared ones only where the site has none live), the placement document, the record
(the new member, its reservation under ``extra``) and the machines stepped with
``machine.Placed``. The new member joins in the role the machine asked (standby).

The slot stays taken until the replacement is READY (the failover controller's step calls
``finish``) — "under way" means building, not deciding.

Priority lane (``lane.Lane``): a re-placement starts, reads, and commits only while the
lane is clear, so no DOWN verdict or promotion ever waits behind one.

Invariants: no desired object is written before the member's quota is reserved
(invariant 7); a replacement is written at most once per ask (the transaction compares the
machines the decision was made on); a site that is down, drained or full is never chosen.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from broker import errors
from broker.election.fencing import fenced_txn
from broker.failover import limits, machine, policy, replace
from broker.models import codec, objects
from broker.models import vnf as model
from broker.controllers import batches, imageorders
from broker.controllers.lane import Lane
from broker.placement import commit, feasible, render
from broker.placement.plan import Assignment, Planner, PlanResult, assignment_json
from broker.placement.snapshot import Live, Snapshot
from broker.quotas.headroom import REFUSED, Headroom
from broker.settings import BrokerSettings
from broker.stitching.ledger import Ledger
from broker.store import keys
from broker.store.protocol import Compare, Get, KeyValue, Op, Put, Store, Target
from quota import errors as quota_errors
from replication import catalog

log = logging.getLogger(__name__)

RETRY_S = 1.0
"""How long a replacement that could not go ahead now (image on its way, every fitting
site at its limit, a conflict) waits before it is tried again."""
REPLACING = "replacing:"
"""``extra`` key prefix of a record: ``replacing:<member>@<site>`` → the reservation of a
replacement not READY yet (its usage is not booked)."""
IMAGE_WAIT = "image"


def pending(record: model.VnfRecord) -> dict[str, str]:
    """Member key (name@site) → reservation, for the replacements not booked yet."""
    return {k[len(REPLACING) :]: v for k, v in record.extra.items() if k.startswith(REPLACING)}


def reservation_key(vnf_id: str, old: machine.Member, site: str) -> str:
    """The ledger key of ``old``'s replacement at ``site``: unique per loss and target."""
    return f"{vnf_id}.{old.name}.{old.site}.{old.placed_ms}.{site}"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclasses.dataclass(frozen=True, slots=True)
class Found:
    """What one replacement reads: the record, the machines and the member to replace."""

    rec_kv: KeyValue
    fo_kv: KeyValue
    rec: model.VnfRecord
    machines: dict[str, machine.Vnf]
    vdu: str
    old: machine.Member
    placement: dict[str, Any]


class Replacer:
    """Queues, bounds and carries out the machines' replacements (see the module)."""

    def __init__(
        self,
        store: Store,
        fence: int,
        settings: BrokerSettings,
        headroom: Headroom,
        live: Live,
        on_done: Callable[[str], None],
        *,
        planner: Planner | None = None,
        lane: Lane | None = None,
    ) -> None:
        self.store, self.fence, self.headroom, self.live = store, fence, headroom, live
        self.lane = lane or Lane()
        self.on_done = on_done
        """Called with a VNF id after its machines changed here (its step follows)."""
        self.planner = planner or Planner()
        self.vlans = Ledger(store, fence, settings.stitching)
        """The VLAN ids of the VNFs' links at the sites their members run at."""
        fo = settings.failover
        self.recoveries = limits.Recoveries(fo.max_replacements, fo.max_per_site)
        self.avoid: Callable[[], Collection[str]] = frozenset
        """Sites no replacement may go to besides the machine's own (drained ones)."""
        self._wake = asyncio.Event()

    def ask(self, vnf_id: str, key: str, priority: int, asked_ms: int) -> None:
        self.recoveries.ask(limits.Request(vnf_id, key, priority, asked_ms))
        self._wake.set()

    def finish(self, vnf_id: str, key: str) -> None:
        """The replacement of ``key`` is READY, refused or no longer wanted: free its slot."""
        self.recoveries.finish(vnf_id, key)
        self.recoveries.cancel(vnf_id, key)
        self._wake.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while True:
                    await self.lane.clear()
                    if (req := self.recoveries.next()) is None:
                        break
                    tg.create_task(self._one(req))

    async def _one(self, req: limits.Request) -> None:
        try:
            again = await self.carry_out(req)
        except (errors.Conflict, errors.StoreUnavailable, quota_errors.Temporary) as exc:
            log.info("replacing %s of %s: %s; again", req.member, req.vnf, exc)
            again = True
        except errors.FencedOut:
            raise
        except errors.BrokerError as exc:
            log.warning("replacing %s of %s failed: %s", req.member, req.vnf, exc)
            again = True
        if again:
            self.recoveries.finish(req.vnf, req.member)
            await asyncio.sleep(RETRY_S)
            self.ask(req.vnf, req.member, req.priority, req.asked_ms)

    # -- one replacement -------------------------------------------------------------

    async def carry_out(self, req: limits.Request) -> bool:
        """Carry out ``req`` once; True when it is to be tried again later."""
        await self.lane.clear()
        found = await self._read(req.vnf, req.member)
        if found is None:
            self.finish(req.vnf, req.member)
            return False
        snap = await self.live.current()
        desc = model.parse(found.rec.descriptor)
        decision, full = self._decide(snap, found, desc)
        if decision.claim is None:
            if full:
                return True  # somewhere fits once a site's replacements are done
            await self._step(found, machine.PlaceFailed(found.old.key, decision.reason))
            self.finish(req.vnf, req.member)
            return False
        site = decision.site
        if not self.recoveries.target(req.vnf, req.member, site):
            return True
        image = desc.vdu(found.vdu).sw_image
        if not await self._image_at(desc, image, site):
            return True
        reservation = ""  # rebuilt at its own site: it keeps what the lost member held
        if site != found.old.site:
            deltas = model.member_deltas(desc).get(found.old.name, {})
            try:
                reservation = await self.headroom.reserve(
                    found.rec.tenant, deltas, key=reservation_key(req.vnf, found.old, site)
                )
            except REFUSED as exc:
                await self._step(found, machine.PlaceFailed(found.old.key, f"quota: {exc}"))
                self.finish(req.vnf, req.member)
                return False
        # not landed: the next try reserves under the same key (the same hold) when it
        # chooses the same site; a hold for a site not chosen again lapses with its lease
        await self.lane.clear()
        landed = await self._commit(snap, found, desc, decision.claim, site, reservation)
        if landed:
            log.info("vnf %s: %s re-placed at %s", req.vnf, found.old.key, site)
            self.on_done(req.vnf)
            return False
        return True

    async def _read(self, vnf_id: str, key: str) -> Found | None:
        got = await self.store.txn(
            [], [Get(keys.vnf(vnf_id)), Get(keys.failover(vnf_id)), Get(keys.placement(vnf_id))]
        )
        rec_kv, fo_kv, pl_kv = (r[0] if r else None for r in got.responses)
        if rec_kv is None or fo_kv is None:
            return None
        rec = codec.decode(model.VnfRecord, rec_kv.value)
        if rec.deleted or rec.state in (model.VnfState.DELETING, model.VnfState.FAILED):
            return None
        machines = policy.load(fo_kv.value)
        for vdu, mach in machines.items():
            for m in mach.members:
                if m.key == key and m.replace_wanted:
                    placement = json.loads(pl_kv.value) if pl_kv is not None else {}
                    return Found(rec_kv, fo_kv, rec, machines, vdu, m, placement)
        return None

    def _decide(
        self, snap: Snapshot, found: Found, desc: model.Descriptor
    ) -> tuple[replace.Decision, bool]:
        """The decision, and whether sites at their limit were passed over for it."""
        planner = self.planner.with_checkers(*feasible.for_request(found.rec.scope, None))
        ranker = replace.Ranker(snap, planner)
        peers = [
            replace.Peer(vdu, m.site, m.host)
            for vdu, mach in found.machines.items()
            for m in mach.members
            if not m.condemned
        ]
        old = found.old
        avoid = {*old.avoid_sites, *self.avoid()}
        full = {s.id for s in snap.order if not self.recoveries.site_open(s.id)} - avoid
        ref = f"{found.rec.id}/{old.name}"
        decision = replace.decide(
            ranker, desc, ref, found.vdu, peers, avoid | full, old.avoid_hosts
        )
        if decision.claim is None and full:
            wider = replace.decide(ranker, desc, ref, found.vdu, peers, avoid, old.avoid_hosts)
            return decision, wider.claim is not None
        return decision, False

    async def _image_at(self, desc: model.Descriptor, image: str, site: str) -> bool:
        """Whether ``image`` can be used at ``site`` now; orders its replication if not.

        An image the descriptor declares (``sw_images``) is built by the site itself; a
        catalogue image must have an active replica there.
        """
        if image in {s.name for s in desc.sw_images}:
            return True
        got = await self.store.txn(
            [], [Get(keys.image(image)), Get(keys.image_replica(image, site))]
        )
        entry_kv, replica_kv = (r[0] if r else None for r in got.responses)
        if entry_kv is None:
            return True  # not catalogued either: the site's own image store decides
        if replica_kv is not None:
            if catalog.decode_replica(replica_kv.value).state is catalog.State.ACTIVE:
                return True
        entry = catalog.Entry.decode(entry_kv.value)
        if site not in entry.targets:
            ordered = dataclasses.replace(
                entry,
                targets=tuple(sorted({*entry.targets, catalog.SiteId(site)})),
                generation=entry.generation + 1,
            )
            check = Compare(entry_kv.key, Target.MOD, Op.EQUAL, entry_kv.mod_revision)
            await fenced_txn(self.store, self.fence, [Put(entry_kv.key, ordered.encode())], [check])
            log.info("image %s ordered at %s for a replacement", image, site)
        return False

    async def _step(self, found: Found, ev: machine.Event) -> None:
        """Step the member's machine with ``ev`` and store the machines (fenced, compared)."""
        machines = dict(found.machines)
        machines[found.vdu] = machine.step(machines[found.vdu], ev, now_ms()).vnf
        check = Compare(found.fo_kv.key, Target.MOD, Op.EQUAL, found.fo_kv.mod_revision)
        await fenced_txn(
            self.store, self.fence, [Put(found.fo_kv.key, policy.dump(machines))], [check]
        )
        self.on_done(found.rec.id)

    async def _commit(
        self,
        snap: Snapshot,
        found: Found,
        desc: model.Descriptor,
        claim: Any,
        site: str,
        reservation: str,
    ) -> bool:
        """Land the replacement; ``reservation`` is "" for one rebuilt at the lost
        member's own site (its usage stays booked, or its reservation pending)."""
        rec, old = found.rec, found.old
        machines = dict(found.machines)
        placed = machine.Placed(old.key, site, claim.host)
        machines[found.vdu] = machine.step(machines[found.vdu], placed, now_ms()).vnf
        role = old.replace_role or machine.STANDBY
        who = next(m for m in model.members(desc) if m.name == old.name)
        assignment = Assignment(dataclasses.replace(who, role=role), site, claim, 0.0)
        # the VLAN ids of the new site's links too (the other members', kept)
        now_at = batches.assignments(snap, desc, rec)
        if now_at is None:  # without every claim, holding would give some VLAN ids back
            raise errors.Conflict(f"vnf {rec.id}: the snapshot lacks a member's claim")
        vlans = await self.vlans.hold_vlans(rec.id, render.vlan_wants(desc, [*now_at, assignment]))
        objs = render.objects(rec.id, desc, [assignment], vlans)
        puts, generation = await self._objects(objs)
        new_key = f"{old.name}@{site}"
        status = model.MemberStatus(
            old.name, found.vdu, role, site, claim.host, claim.cell, generation=generation
        )
        members = tuple(m for m in rec.members if f"{m.name}@{m.site}" != new_key)
        extra = {**rec.extra, REPLACING + new_key: reservation} if reservation else rec.extra
        update = dataclasses.replace(
            rec, members=(*members, status), extra=extra, updated_ms=now_ms()
        )
        doc = _placement_with(found.placement, assignment_json(snap, assignment), objs)
        ops = [
            *puts,
            Put(keys.vnf(rec.id), codec.encode(update)),
            Put(keys.placement(rec.id), json.dumps(doc, separators=(",", ":")).encode()),
            Put(keys.failover(rec.id), policy.dump(machines)),
        ]
        view = snap.sites[site]
        result = PlanResult(True, (assignment,), revisions={site: (view.inv_rev, view.claims_rev)})
        checks = [
            Compare(found.rec_kv.key, Target.MOD, Op.EQUAL, found.rec_kv.mod_revision),
            Compare(found.fo_kv.key, Target.MOD, Op.EQUAL, found.fo_kv.mod_revision),
        ]
        needs = await imageorders.missing(self.store, desc, [assignment])
        outcome = await commit.commit(self.store, self.fence, snap, result, ops, compares=checks)
        if outcome.landed:  # a declared sw_image the site lacks: ordered as placement does
            await imageorders.order(self.store, self.fence, rec.id, needs)
        return outcome.landed

    async def _objects(self, objs: list[render.Desired]) -> tuple[list[Put], int]:
        """The member's objects: each one new, or the next generation of a tombstone;
        a shared object the site already holds live is left as it is (the server is
        always written: a new generation rebuilds one gone from its site). And the
        generation of its server."""
        got = await self.store.txn([], [Get(o.key) for o in objs])
        puts, generation = [], objects.FIRST
        for o, found in zip(objs, got.responses, strict=True):
            if not found:
                puts.append(o.put())
                continue
            stored = objects.Desired.decode(found[0].value)
            if stored.deleted or o.kind == render.SERVER:
                revised = stored.revise(o.spec)
                puts.append(Put(o.key, revised.encode()))
                if o.kind == render.SERVER:
                    generation = revised.generation
        return puts, generation


def _placement_with(
    doc: dict[str, Any], assignment: dict[str, Any], objs: list[render.Desired]
) -> dict[str, Any]:
    """The placement document with a replacement's assignment and objects added."""
    site, member = assignment["site"], assignment["member"]
    kept = [a for a in doc.get("assignments", []) if (a["site"], a["member"]) != (site, member)]
    listed = [list(o) for o in doc.get("objects", [])]
    seen = {tuple(o) for o in listed}
    listed += [[o.site, o.kind, o.name] for o in objs if (o.site, o.kind, o.name) not in seen]
    return {**doc, "assignments": [*kept, assignment], "objects": listed}


def placement_without(doc: dict[str, Any], vnf_id: str, name: str, site: str) -> dict[str, Any]:
    """The placement document without a deleted member's assignment, server and ports."""
    server = render.server_name(vnf_id, name)

    def own(o: list[str]) -> bool:
        return o[0] == site and (
            o[2] == server or (o[1] == "port" and o[2].startswith(server + "-"))
        )

    return {
        **doc,
        "assignments": [
            a for a in doc.get("assignments", []) if (a["site"], a["member"]) != (site, name)
        ],
        "objects": [o for o in doc.get("objects", []) if not own(o)],
    }
