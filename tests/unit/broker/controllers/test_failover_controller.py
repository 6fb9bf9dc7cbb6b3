"""The failover controller on the in-memory store: a lost active's standby is promoted as
fenced desired state, the VNF is ACTIVE-serving again only when the role is reported, and
a next leader resumes from the stored machines (issue 10)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from broker import errors
from broker.controllers import failover
from broker.failover import machine
from broker.models import codec, objects
from broker.models import vnf as model
from broker.models.site import Health, SiteHealth
from broker.settings import BrokerSettings
from broker.store import keys
from broker.store.memory import MemoryStore

SAMPLE = Path(__file__).parents[4] / "deploy" / "samples" / "vnf" / "vfirewall.yaml"
VNF = "v1"


async def lead(store: MemoryStore) -> int:
    await store.delete(keys.LEADER)
    await store.put(keys.LEADER, b"b1")
    kv = await store.get(keys.LEADER)
    assert kv is not None
    return kv.create_revision


def server_key(site: str, member: str) -> str:
    return keys.desired(site, "server", f"{VNF}-{member}")


async def report(store: MemoryStore, site: str, member: str, gen: int, role: str) -> None:
    status = objects.Status(
        "server", f"{VNF}-{member}", gen, objects.State.READY, outputs={"role": role}
    )
    await store.put(keys.observed(site, "server", f"{VNF}-{member}"), status.encode())


async def seed(store: MemoryStore) -> None:
    desc = model.load_text(SAMPLE.read_text())
    members = (
        model.MemberStatus("fw-0", "fw", "active", "s1", "h1", 0, "READY"),
        model.MemberStatus("fw-1", "fw", "standby", "s2", "h2", 0, "READY"),
    )
    rec = model.VnfRecord(VNF, "acme-nfv", desc, state=model.VnfState.ACTIVE, members=members)
    await store.put(keys.vnf(VNF), codec.encode(rec))
    for m in members:
        spec = {"project": "p", "metadata": {"meridian:role": m.role}}
        await store.put(server_key(m.site, m.name), objects.Desired(1, spec).encode())
        port = keys.desired(m.site, "port", f"{VNF}-{m.name}-mgmt")
        await store.put(port, objects.Desired(1, {"project": "p"}).encode())
        await report(store, m.site, m.name, 1, m.role)


async def record(store: MemoryStore) -> model.VnfRecord:
    kv = await store.get(keys.vnf(VNF))
    assert kv is not None
    return codec.decode(model.VnfRecord, kv.value)


async def desired(store: MemoryStore, site: str, member: str) -> objects.Desired:
    kv = await store.get(server_key(site, member))
    assert kv is not None
    return objects.Desired.decode(kv.value)


async def kinds(store: MemoryStore) -> list[str]:
    kvs, _ = await store.get_prefix(keys.EVENTS)
    return [json.loads(kv.value)["kind"] for kv in kvs]


@pytest.fixture
async def ctl(memory_store: MemoryStore) -> failover.FailoverController:
    await seed(memory_store)
    return failover.FailoverController(memory_store, await lead(memory_store), BrokerSettings())


async def test_site_down_promotes_the_standby_as_fenced_desired_state(
    memory_store: MemoryStore, ctl: failover.FailoverController
) -> None:
    await ctl.step(VNF)
    assert (await record(memory_store)).state is model.VnfState.ACTIVE
    assert (await desired(memory_store, "s2", "fw-1")).generation == 1, "nothing lost: no write"

    ctl.health["s1"] = Health.DOWN
    await ctl.step(VNF)
    promoted, demoted = (
        await desired(memory_store, "s2", "fw-1"),
        await desired(memory_store, "s1", "fw-0"),
    )
    assert (promoted.generation, promoted.spec["metadata"]["meridian:role"]) == (2, "active")
    assert (demoted.generation, demoted.spec["metadata"]["meridian:role"]) == (2, "standby")
    rec = await record(memory_store)
    assert rec.state is model.VnfState.FAILING_OVER
    assert {m.name: m.role for m in rec.members} == {"fw-0": "standby", "fw-1": "active"}
    assert await kinds(memory_store) == ["vnf.member_lost", "vnf.failover_started"]
    assert ctl.replacer.recoveries.queued() == 1, "its replacement is asked for"

    await report(memory_store, "s2", "fw-1", 1, "standby")  # the old generation: not yet
    await ctl.step(VNF)
    assert (await record(memory_store)).state is model.VnfState.FAILING_OVER

    await report(memory_store, "s2", "fw-1", 2, "active")
    await ctl.step(VNF)
    rec = await record(memory_store)
    assert rec.state is model.VnfState.HEALING, rec.reason
    assert "restoring fw-0" in rec.reason
    assert (await kinds(memory_store))[-2:] == ["vnf.failover_started", "vnf.failover_completed"]

    ctl.health["s1"] = Health.UP  # the lost site is back: nothing is promoted twice
    await report(memory_store, "s1", "fw-0", 2, "standby")
    await ctl.step(VNF)
    assert (await desired(memory_store, "s2", "fw-1")).generation == 2
    assert (await desired(memory_store, "s1", "fw-0")).generation == 2


async def test_a_server_lost_at_the_site_is_a_member_loss(
    memory_store: MemoryStore, ctl: failover.FailoverController
) -> None:
    gone = objects.Status(
        "server", f"{VNF}-fw-0", 1, objects.State.FAILED, "gone: no longer at the site"
    )
    await memory_store.put(keys.observed("s1", "server", f"{VNF}-fw-0"), gone.encode())
    await ctl.step(VNF)
    assert (await desired(memory_store, "s2", "fw-1")).spec["metadata"]["meridian:role"] == (
        "active"
    )
    kvs, _ = await memory_store.get_prefix(keys.EVENTS)
    assert "gone: no longer at the site" in json.loads(kvs[0].value)["message"]


async def test_the_next_leader_resumes_from_the_stored_machines(
    memory_store: MemoryStore, ctl: failover.FailoverController
) -> None:
    ctl.health["s1"] = Health.DOWN
    await ctl.step(VNF)
    nxt = failover.FailoverController(memory_store, await lead(memory_store), BrokerSettings())
    nxt.health["s1"] = Health.DOWN
    with pytest.raises(errors.FencedOut):
        await report(memory_store, "s2", "fw-1", 2, "active")
        await ctl.step(VNF)  # the deposed leader writes nothing
    await nxt.step(VNF)
    assert (await record(memory_store)).state is model.VnfState.HEALING
    assert (await desired(memory_store, "s2", "fw-1")).generation == 2, "promoted once"
    assert (await kinds(memory_store)).count("vnf.failover_started") == 1


async def test_running_controller_follows_site_health(
    memory_store: MemoryStore, ctl: failover.FailoverController
) -> None:
    task = asyncio.create_task(ctl.run())
    try:
        down = SiteHealth("s1", Health.DOWN, 1)
        await memory_store.put(keys.health("s1"), codec.encode(down))
        for _ in range(300):
            if (await record(memory_store)).state is model.VnfState.FAILING_OVER:
                break
            await asyncio.sleep(0.01)
        assert (await record(memory_store)).state is model.VnfState.FAILING_OVER
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_machines_round_trip_through_the_store_format() -> None:
    from broker.failover import policy

    desc = model.parse(SAMPLE.read_text())
    rec = model.VnfRecord(
        VNF,
        "t",
        {},
        members=(model.MemberStatus("fw-0", "fw", "active", "s1", "h1", 0, "READY"),),
    )
    built = policy.machines(rec, desc, BrokerSettings())
    stepped = machine.step(built["fw"], machine.Lost("fw-0@s1", "x"), 5).vnf
    again = {"fw": stepped}
    assert policy.load(policy.dump(again)) == again


async def test_an_operator_switchover_demotes_first_then_promotes(
    memory_store: MemoryStore, ctl: failover.FailoverController
) -> None:
    await memory_store.put(keys.failover_asked(VNF), b'{"to_site": "s2"}')
    await ctl.step(VNF)
    assert await memory_store.get(keys.failover_asked(VNF)) is None, "consumed once"
    old, new = await desired(memory_store, "s1", "fw-0"), await desired(memory_store, "s2", "fw-1")
    assert (old.generation, old.spec["metadata"]["meridian:role"]) == (2, "standby")
    assert new.generation == 1, "no promotion before the old active reports its demotion"
    assert (await record(memory_store)).state is model.VnfState.FAILING_OVER
    await report(memory_store, "s1", "fw-0", 2, "standby")
    await ctl.step(VNF)
    new = await desired(memory_store, "s2", "fw-1")
    assert (new.generation, new.spec["metadata"]["meridian:role"]) == (2, "active")
    await report(memory_store, "s2", "fw-1", 2, "active")
    await ctl.step(VNF)
    assert (await record(memory_store)).state is model.VnfState.ACTIVE
    assert (await kinds(memory_store))[-2:] == ["vnf.failover_completed", "vnf.active"]


async def test_a_deleted_vnf_leaves_no_machines(
    memory_store: MemoryStore, ctl: failover.FailoverController
) -> None:
    await ctl.step(VNF)
    assert await memory_store.get(keys.failover(VNF)) is not None
    await memory_store.delete(keys.vnf(VNF))
    await memory_store.put(keys.failover_asked(VNF), b"{}")
    await ctl.step(VNF)
    assert await memory_store.get(keys.failover(VNF)) is None
    assert await memory_store.get(keys.failover_asked(VNF)) is None
