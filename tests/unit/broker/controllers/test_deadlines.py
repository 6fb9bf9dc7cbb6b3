"""READY deadlines and partial failure of a first placement (issue 10 item 7), driven clock.

The VNF controller runs over the in-memory store; agents are played by writing
``observed/`` statuses, and time by the controller's clock. A vfirewall (active-standby,
site anti-affinity) is placed on six sites; its ``fw-0`` never comes up.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from broker import errors
from broker.controllers import deadlines
from broker.controllers.failover import FailoverController
from broker.controllers.vnfs import VnfController
from broker.models import codec, objects
from broker.models import vnf as model
from broker.placement import claims as cl
from broker.placement.snapshot import Snapshot
from broker.quotas.headroom import Unlimited
from broker.settings import BrokerSettings
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.support import placement as P

SITES = P.regions(2)
TIMEOUT_MS = 60_000
IDS = itertools.count(1)


@dataclass
class World:
    store: MemoryStore
    ctl: VnfController
    headroom: Unlimited
    now: int = 1_000_000

    def clock(self) -> int:
        return self.now


@pytest.fixture
async def w() -> AsyncIterator[World]:
    store = MemoryStore()
    await P.seed_store(store, SITES, P.paris_latency(SITES))
    fence = await store.put(keys.LEADER, b"me")
    headroom = Unlimited()
    limits = deadlines.Limits(ready_timeout_ms=TIMEOUT_MS, max_attempts=3)
    ctl = VnfController(store, fence, headroom=headroom, limits=limits)
    ctl.snap = await Snapshot.load(store)
    world = World(store, ctl, headroom)
    ctl.clock = world.clock
    yield world
    await store.close()


async def submit(w: World, **failover: Any) -> str:
    doc = model.to_json(P.sample("vfirewall"))
    doc["vdus"][0]["redundancy"]["failover"] = failover
    desc = model.parse(json.dumps(doc).encode())
    vnf_id = f"vfirewall-{next(IDS):04d}"
    record = model.VnfRecord(vnf_id, desc.tenant, model.to_json(desc), created_ms=w.now)
    await w.store.put(keys.vnf(vnf_id), codec.encode(record))
    await step(w, vnf_id)
    return vnf_id


async def step(w: World, vnf_id: str) -> model.VnfRecord:
    await w.ctl.step(vnf_id)
    await w.ctl.drain()
    kv = await w.store.get(keys.vnf(vnf_id))
    assert kv is not None
    return codec.decode(model.VnfRecord, kv.value)


def member(rec: model.VnfRecord, name: str) -> model.MemberStatus:
    return next(m for m in rec.members if m.name == name)


async def desired(w: World, site: str, kind: str, name: str) -> objects.Desired | None:
    kv = await w.store.get(keys.desired(site, kind, name))
    return objects.Desired.decode(kv.value) if kv is not None else None


async def report(
    w: World, vnf_id: str, m: model.MemberStatus, state: str, *, temporary: bool = False
) -> None:
    server = f"{vnf_id}-{m.name}"
    obj = await desired(w, m.site, "server", server)
    assert obj is not None
    status = {
        "kind": "server",
        "name": server,
        "observed_generation": obj.generation,
        "state": state,
        "message": "no valid host" if state == "FAILED" else "",
        "temporary": temporary,
        "outputs": {"host": m.host, "role": m.role},
        "at_ms": w.now,
    }
    await w.store.put(keys.observed(m.site, "server", server), json.dumps(status).encode())


async def claims_of(w: World, ref: str) -> list[tuple[str, str]]:
    """(site, host) of every claim of member ``ref`` in the store."""
    out = []
    for kv in (await w.store.get_prefix(keys.CLAIMS))[0]:
        for name, claim in cl.decode(kv.value).items():
            if name == ref:
                out.append((keys.name_in(keys.CLAIMS, kv.key), claim.host))
    return out


async def event_kinds(w: World) -> list[str]:
    return [json.loads(kv.value)["kind"] for kv in (await w.store.get_prefix(keys.EVENTS))[0]]


async def test_late_member_is_moved_host_then_site_then_given_up(w: World) -> None:
    vnf_id = await submit(w)
    rec = await step(w, vnf_id)
    assert rec.state is model.VnfState.PLACED
    first, standby = member(rec, "fw-0"), member(rec, "fw-1")
    await report(w, vnf_id, standby, "READY")
    w.now += TIMEOUT_MS - 1
    rec = await step(w, vnf_id)
    assert member(rec, "fw-0") == first, "moved before its deadline"
    # deadline 1: another host (the failing one excluded), its site still allowed
    w.now += 1
    rec = await step(w, vnf_id)
    second = member(rec, "fw-0")
    assert (second.attempts, second.placed_ms, second.state) == (2, w.now, "PENDING")
    assert second.host != first.host and second.avoid_hosts == (first.host,)
    assert second.site != standby.site, "anti-affinity with the other member kept"
    assert await claims_of(w, f"{vnf_id}/fw-0") == [(second.site, second.host)]
    server = await desired(w, second.site, "server", f"{vnf_id}-fw-0")
    assert server is not None and not server.deleted
    assert server.spec["hypervisor_hostname"] == second.host
    assert rec.state is model.VnfState.PLACED
    # deadline 2: the site it failed on is excluded too; its server there is deleted
    w.now += TIMEOUT_MS
    rec = await step(w, vnf_id)
    third = member(rec, "fw-0")
    assert third.attempts == 3 and second.site in third.avoid_sites
    assert third.site not in (second.site, standby.site)
    assert await claims_of(w, f"{vnf_id}/fw-0") == [(third.site, third.host)]
    old = await desired(w, second.site, "server", f"{vnf_id}-fw-0")
    assert old is not None and old.deleted
    ports, _ = await w.store.get_prefix(keys.desired(second.site, "port", f"{vnf_id}-fw-0-"))
    assert ports and all(objects.Desired.decode(p.value).deleted for p in ports)
    placement = json.loads((await w.store.get(keys.placement(vnf_id))).value)  # type: ignore[union-attr]
    assert {a["site"] for a in placement["assignments"]} == {third.site, standby.site}
    # deadline 3: max_attempts reached; the standby serves alone, DEGRADED
    w.now += TIMEOUT_MS
    rec = await step(w, vnf_id)
    gone = member(rec, "fw-0")
    assert gone.given_up and gone.state == "FAILED" and "not READY within 60 s" in gone.message
    assert rec.state is model.VnfState.DEGRADED and "fw-0 given up" in rec.reason
    assert await claims_of(w, f"{vnf_id}/fw-0") == []
    last = await desired(w, third.site, "server", f"{vnf_id}-fw-0")
    assert last is not None and last.deleted
    assert rec.reservation in w.headroom.committed and rec.extra.get("quota") == "1"
    kinds = await event_kinds(w)
    assert kinds.count("vnf.member_lost") == 3 and kinds[-1] == "vnf.degraded"
    assert (await step(w, vnf_id)) == rec, "a settled VNF is left to the failover controller"


async def test_a_server_failed_for_good_is_moved_at_once_a_temporary_failure_waits(
    w: World,
) -> None:
    vnf_id = await submit(w)
    rec = await step(w, vnf_id)
    first = member(rec, "fw-0")
    await report(w, vnf_id, first, "FAILED", temporary=True)
    assert member(await step(w, vnf_id), "fw-0").attempts == 1
    await report(w, vnf_id, first, "FAILED")
    rec = await step(w, vnf_id)
    moved = member(rec, "fw-0")
    assert moved.attempts == 2 and moved.host != first.host
    told = [json.loads(kv.value) for kv in (await w.store.get_prefix(keys.EVENTS))[0]]
    assert told[-1]["kind"] == "vnf.member_lost" and "no valid host" in told[-1]["message"]
    await report(w, vnf_id, moved, "READY")
    await report(w, vnf_id, member(rec, "fw-1"), "READY")
    rec = await step(w, vnf_id)
    assert rec.state is model.VnfState.ACTIVE and all(not m.given_up for m in rec.members)


async def test_on_member_failure_fail_fails_the_whole_vnf(w: World) -> None:
    w.ctl.limits = deadlines.Limits(ready_timeout_ms=TIMEOUT_MS, max_attempts=1)
    vnf_id = await submit(w, on_member_failure="fail")
    rec = await step(w, vnf_id)
    await report(w, vnf_id, member(rec, "fw-1"), "READY")
    await report(w, vnf_id, member(rec, "fw-0"), "FAILED")
    rec = await step(w, vnf_id)
    assert rec.state is model.VnfState.FAILED and "on_member_failure: fail" in rec.reason
    assert rec.extra.get("tombstones") == "1", "the rest is torn down"
    assert (await event_kinds(w))[-1] == "vnf.failed"


async def test_nowhere_left_gives_the_member_up_with_the_reason(w: World) -> None:
    vnf_id = await submit(w)
    rec = await step(w, vnf_id)
    first = member(rec, "fw-0")
    await report(w, vnf_id, member(rec, "fw-1"), "READY")
    # every other site goes away: the only way out is the failing host's own site
    for site in SITES:
        if site.id not in (first.site, member(rec, "fw-1").site):
            w.ctl.snap.apply(keys.site(site.id), None, 10**6)
    await report(w, vnf_id, first, "FAILED")
    rec = await step(w, vnf_id)
    moved = member(rec, "fw-0")
    assert moved.site == first.site and moved.host != first.host, "the other host first"
    assert moved.generation == 2
    # the failure of the first placement (generation 1) is not the second's
    rec = await step(w, vnf_id)
    assert member(rec, "fw-0").attempts == 2 and member(rec, "fw-0").state == "PENDING"
    w.now += TIMEOUT_MS
    rec = await step(w, vnf_id)
    gone = member(rec, "fw-0")
    assert gone.given_up and "no site takes" in gone.message
    assert rec.state is model.VnfState.DEGRADED


async def test_a_deposed_leader_moves_nothing(w: World) -> None:
    vnf_id = await submit(w)
    before = await step(w, vnf_id)
    await w.store.delete(keys.LEADER)
    await w.store.put(keys.LEADER, b"someone-else")
    w.now += TIMEOUT_MS
    with pytest.raises(errors.FencedOut):
        await w.ctl.step(vnf_id)
    kv = await w.store.get(keys.vnf(vnf_id))
    assert kv is not None and codec.decode(model.VnfRecord, kv.value) == before
    assert await claims_of(w, f"{vnf_id}/fw-0") == [
        (member(before, "fw-0").site, member(before, "fw-0").host)
    ]


async def test_a_given_up_active_is_handed_to_failover_as_lost(w: World) -> None:
    """The failover controller takes the DEGRADED VNF over: the given-up active member is
    a loss, so the READY standby is promoted (restoring it is the failover's own job)."""
    vnf_id = await submit(w)
    rec = await step(w, vnf_id)
    standby = member(rec, "fw-1")
    await report(w, vnf_id, standby, "READY")
    for _ in range(3):
        w.now += TIMEOUT_MS
        rec = await step(w, vnf_id)
    assert rec.state is model.VnfState.DEGRADED and member(rec, "fw-0").given_up
    leader = await w.store.get(keys.LEADER)
    assert leader is not None
    failover = FailoverController(w.store, leader.mod_revision, BrokerSettings())
    await failover.step(vnf_id)
    server = await desired(w, standby.site, "server", f"{vnf_id}-fw-1")
    assert server is not None and server.spec["metadata"]["meridian:role"] == "active"
    kv = await w.store.get(keys.vnf(vnf_id))
    assert kv is not None
    after = codec.decode(model.VnfRecord, kv.value)
    assert member(after, "fw-1").role == "active", after
