"""The drill controller with the real failover controller on the in-memory store: a live
drill cuts one VNF's site, the failover controller promotes the standby (the drill only
cuts and asks), the report measures the RTO from the events, failback switches the roles
back; a deposed leader's drill step never lands; a real DOWN aborts (issue 11)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from broker import errors
from broker.controllers import drills, failover
from broker.drills import live, rto
from broker.models import codec
from broker.models.site import Health, SiteHealth
from broker.settings import BrokerSettings
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.unit.broker.controllers.test_failover_controller import (
    VNF,
    desired,
    lead,
    record,
    report,
    seed,
)

DRILL = "drill-1"


def role(obj: Any) -> str:
    return str(obj.spec["metadata"]["meridian:role"])


async def plan(store: MemoryStore, failback: bool = True) -> None:
    doc = {
        "id": DRILL,
        "mode": "live",
        "state": live.PLANNED,
        "scope": {"sites": ["s1"]},
        "sites": ["s1"],
        "tenants": [],
        "vnfs": [],
        "max_duration_s": 600,
        "failback": failback,
        "created_ms": 1,
        "result": {"vnfs": [{"vnf": VNF, "tenant": "acme-nfv", "rto_s": 5.0}]},
    }
    await store.put(keys.drill(DRILL), json.dumps(doc).encode())


async def stored(store: MemoryStore) -> dict[str, Any]:
    kv = await store.get(keys.drill(DRILL))
    assert kv is not None
    doc: dict[str, Any] = json.loads(kv.value)
    return doc


@pytest.fixture
async def pair(
    memory_store: MemoryStore,
) -> tuple[drills.DrillController, failover.FailoverController]:
    await seed(memory_store)
    fence = await lead(memory_store)
    dr = drills.DrillController(memory_store, fence, BrokerSettings())
    fo = failover.FailoverController(memory_store, fence, BrokerSettings())
    dr.health = {"s1": Health.UP, "s2": Health.UP}
    fo.health = dict(dr.health)
    dr.unfinished.add(DRILL)
    return dr, fo


async def test_a_live_drill_promotes_measures_and_fails_back(
    memory_store: MemoryStore, pair: tuple[drills.DrillController, failover.FailoverController]
) -> None:
    dr, fo = pair
    await plan(memory_store)
    await dr.step(DRILL)
    doc = await stored(memory_store)
    assert doc["state"] == live.RUNNING
    assert json.loads((await memory_store.get(keys.drill_cut(VNF))).value)["sites"] == ["s1"]  # type: ignore[union-attr]
    [t] = doc["targets"]
    assert t["cut"] == ["fw-0@s1"] and t["rpo_s"] == 0.0, "generation 1 converged: RPO 0"

    await fo.step(VNF)  # the cut member is reachable: demoted first, nothing promoted yet
    assert role(await desired(memory_store, "s1", "fw-0")) == "standby"
    assert role(await desired(memory_store, "s2", "fw-1")) == "standby", "no dual-active"
    await dr.step(DRILL)
    assert (await stored(memory_store))["state"] == live.RUNNING, "still FAILING_OVER"
    await report(memory_store, "s1", "fw-0", 2, "standby")  # the demotion is reported
    await fo.step(VNF)
    assert role(await desired(memory_store, "s2", "fw-1")) == "active"
    await report(memory_store, "s2", "fw-1", 2, "active")
    await fo.step(VNF)
    await fo.step(VNF)  # the loss of the demoted member follows
    rec = await record(memory_store)
    assert rec.state.value == "DEGRADED" and "fw-0" in rec.reason, rec.reason
    await dr.step(DRILL)
    doc = await stored(memory_store)
    assert doc["state"] == live.FAILING_BACK
    [row] = doc["report"]["vnfs"]
    assert row["rto_s"] is not None and row["rto_s"] >= 0 and row["estimate_rto_s"] == 5.0
    assert row["redundancy_restored_s"].startswith("not restored: ")
    kinds = [e["kind"] for e in doc["report"]["timeline"]]
    assert "vnf.failover_completed" in kinds and kinds[0] == "drill.started"

    await dr.step(DRILL)  # failback of the one VNF: cut lifted, rejoin and switch asked
    assert await memory_store.get(keys.drill_cut(VNF)) is None
    asked = json.loads((await memory_store.get(keys.failover_asked(VNF))).value)  # type: ignore[union-attr]
    assert asked["rejoin"] == ["fw-0@s1"] and asked["to_site"] == "s1"
    await fo.step(VNF)  # fw-0 rejoins; fw-1 is demoted first
    assert (await desired(memory_store, "s2", "fw-1")).spec["metadata"][
        "meridian:role"
    ] == "standby"
    await report(memory_store, "s2", "fw-1", 3, "standby")
    await fo.step(VNF)  # the demotion is reported: fw-0 promoted back
    assert (await desired(memory_store, "s1", "fw-0")).spec["metadata"]["meridian:role"] == "active"
    await report(memory_store, "s1", "fw-0", 3, "active")
    await fo.step(VNF)
    rec = await record(memory_store)
    assert rec.state.value == "ACTIVE", rec.reason
    await dr.step(DRILL)
    doc = await stored(memory_store)
    assert doc["state"] == live.COMPLETED, doc["reason"]
    assert doc["report"]["vnfs"][0]["failback"] == "original roles restored"
    assert doc["report"]["totals"]["failed_back"] == 1
    kept = json.loads((await memory_store.get(keys.RTO_MEASURED)).value)  # type: ignore[union-attr]
    assert kept["promote_s"] == doc["report"]["totals"]["rto_p99_s"] and kept["drill"] == DRILL
    assert kept["promote_samples"] == [doc["report"]["vnfs"][0]["rto_s"]]
    assert kept.get("restore_samples", []) == rto.from_report(doc["report"])[1]


async def test_a_real_site_loss_aborts_and_lifts_the_cut(
    memory_store: MemoryStore, pair: tuple[drills.DrillController, failover.FailoverController]
) -> None:
    dr, _ = pair
    await plan(memory_store)
    await dr.step(DRILL)
    dr.health["s2"] = Health.DOWN
    await dr.step(DRILL)
    doc = await stored(memory_store)
    assert doc["state"] == live.ABORTED and "s2" in doc["reason"]
    assert await memory_store.get(keys.drill_cut(VNF)) is None
    asked = json.loads((await memory_store.get(keys.failover_asked(VNF))).value)  # type: ignore[union-attr]
    assert asked["switch"] is False
    before = await stored(memory_store)
    await dr.step(DRILL)  # terminal: nothing more
    assert await stored(memory_store) == before


async def test_refused_when_a_site_is_down_or_another_drill_runs(
    memory_store: MemoryStore, pair: tuple[drills.DrillController, failover.FailoverController]
) -> None:
    dr, _ = pair
    await plan(memory_store)
    dr.health["s1"] = Health.DOWN
    await dr.step(DRILL)
    doc = await stored(memory_store)
    assert doc["state"] == live.FAILED and "s1" in doc["reason"]
    assert await memory_store.get(keys.drill_cut(VNF)) is None


async def test_a_deposed_leader_lands_no_drill_step(
    memory_store: MemoryStore, pair: tuple[drills.DrillController, failover.FailoverController]
) -> None:
    dr, _ = pair
    await plan(memory_store)
    await lead(memory_store)  # another term: dr's fence is stale
    with pytest.raises(errors.FencedOut):
        await dr.step(DRILL)
    assert (await stored(memory_store))["state"] == live.PLANNED
    assert await memory_store.get(keys.drill_cut(VNF)) is None


async def test_the_controller_follows_health(memory_store: MemoryStore) -> None:
    dr = drills.DrillController(memory_store, 1, BrokerSettings())
    dr._on_health(keys.health("s9"), codec.encode(SiteHealth("s9", Health.DOWN, 0)))
    assert dr.health["s9"] is Health.DOWN


async def test_a_real_loss_outranks_the_cut_in_the_failover_controller(
    memory_store: MemoryStore, pair: tuple[drills.DrillController, failover.FailoverController]
) -> None:
    """The promoted standby's site really goes DOWN before the drill lifts its cut: the
    cut member serves again at once (the VNF never FAILS for a simulated loss)."""
    dr, fo = pair
    await plan(memory_store)
    await dr.step(DRILL)
    await fo.step(VNF)
    await report(memory_store, "s1", "fw-0", 2, "standby")
    await fo.step(VNF)
    await report(memory_store, "s2", "fw-1", 2, "active")
    await fo.step(VNF)
    await fo.step(VNF)
    assert {m.name: m.role for m in (await record(memory_store)).members}["fw-1"] == "active"
    fo.health["s2"] = Health.DOWN
    await fo.step(VNF)  # the cut is still there: the drill has not seen the loss yet
    rec = await record(memory_store)
    assert rec.state.value != "FAILED", rec.reason
    assert {m.name: m.role for m in rec.members} == {"fw-0": "active", "fw-1": "standby"}
    assert role(await desired(memory_store, "s1", "fw-0")) == "active"


async def test_many_vnfs_cut_and_lift_in_batches_resumed_by_the_next_leader(
    memory_store: MemoryStore,
) -> None:
    """130 VNFs: neither their cuts nor their lifts fit one transaction. A leader killed
    between batches: the next one writes exactly the batches left — every cut and every
    lift once, none lost."""
    await seed(memory_store)
    rec = await record(memory_store)
    many = [f"v{i:03d}" for i in range(130)]
    for vnf in many:
        await memory_store.put(keys.vnf(vnf), codec.encode(dataclasses.replace(rec, id=vnf)))
    await memory_store.delete(keys.vnf(VNF))
    await plan(memory_store, failback=False)

    async def leader() -> drills.DrillController:
        dr = drills.DrillController(memory_store, await lead(memory_store), BrokerSettings())
        dr.health = {"s1": Health.UP, "s2": Health.UP}
        dr.unfinished.add(DRILL)
        return dr

    async def written(prefix: str) -> dict[str, int]:
        kvs, _ = await memory_store.get_prefix(prefix)
        return {kv.key: kv.version for kv in kvs}

    first = await leader()
    await first.step(DRILL)
    doc = await stored(memory_store)
    assert doc["state"] == live.RUNNING and len(doc["targets"]) == 130
    cut = await written(keys.DRILL_CUTS)
    assert 0 < len(cut) < 130 and len(cut) + len(doc["pending"]) == 130
    second = await leader()  # the first is killed between batches
    with pytest.raises(errors.FencedOut):
        await first.step(DRILL)
    while (await stored(memory_store)).get("pending"):
        await second.step(DRILL)
    assert await written(keys.DRILL_CUTS) == {keys.drill_cut(v): 1 for v in many}

    await memory_store.put(keys.drill_asked(DRILL), b'{"by": "ops"}')
    await second.step(DRILL)  # aborted without failback: 130 lifts, two operations each
    doc = await stored(memory_store)
    assert doc["state"] == live.ABORTED and 0 < len(doc["pending"]) < 130
    lifted = 130 - len(doc["pending"])
    assert len(await written(keys.DRILL_CUTS)) == 130 - lifted
    second._on_drill(keys.drill(DRILL), json.dumps(doc).encode())
    assert DRILL in second.unfinished, "a terminal drill with lifts left is still followed"
    third = await leader()
    await third.step(DRILL)  # one more batch, then the third is killed too
    fourth = await leader()
    while (await stored(memory_store)).get("pending"):
        await fourth.step(DRILL)
    assert await written(keys.DRILL_CUTS) == {}
    assert await written(keys.FAILOVER_ASKED) == {keys.failover_asked(v): 1 for v in many}
    done = await stored(memory_store)
    assert done["state"] == live.ABORTED and done["pending"] == []
    fourth._on_drill(keys.drill(DRILL), json.dumps(done).encode())
    assert DRILL not in fourth.unfinished


async def isolating(store: MemoryStore, **extra: Any) -> None:
    await plan(store)
    doc = await stored(store)
    await store.put(keys.drill(DRILL), json.dumps({**doc, "isolate": True, **extra}).encode())


async def test_isolate_quarantines_its_sites_whose_down_is_no_real_loss(
    memory_store: MemoryStore, pair: tuple[drills.DrillController, failover.FailoverController]
) -> None:
    dr, _ = pair
    await isolating(memory_store)
    await dr.step(DRILL)
    assert (await stored(memory_store))["state"] == live.RUNNING
    held = await memory_store.get(keys.drill_quarantine("s1"))
    assert held is not None and json.loads(held.value)["drill"] == DRILL
    assert await memory_store.get(keys.drill_cut(VNF)) is not None
    dr.health["s1"] = Health.DOWN  # the quarantine's own doing
    await dr.step(DRILL)
    assert (await stored(memory_store))["state"] == live.RUNNING
    dr.health["s2"] = Health.DOWN  # a real loss
    await dr.step(DRILL)
    doc = await stored(memory_store)
    assert doc["state"] == live.ABORTED and "s2" in doc["reason"] and "s1" not in doc["reason"]
    assert await memory_store.get(keys.drill_quarantine("s1")) is None, "released at the end"
    assert await memory_store.get(keys.drill_cut(VNF)) is None


async def test_isolate_refused_when_a_vnf_outside_the_drill_would_lose_service(
    memory_store: MemoryStore, pair: tuple[drills.DrillController, failover.FailoverController]
) -> None:
    dr, _ = pair
    rec = await record(memory_store)
    alone = dataclasses.replace(rec, id="v-alone", members=rec.members[:1])  # only at s1
    await memory_store.put(keys.vnf(alone.id), codec.encode(alone))
    await isolating(memory_store, vnfs=[VNF])
    await dr.step(DRILL)
    doc = await stored(memory_store)
    assert doc["state"] == live.FAILED and "v-alone" in doc["reason"], doc["reason"]
    assert await memory_store.get(keys.drill_quarantine("s1")) is None
    assert await memory_store.get(keys.drill_cut(VNF)) is None
