"""A 60-member VNF (4 connection points each) places and deletes in fenced batches
(issue 10 item 8), and a leader killed before any one of its transactions loses nothing:
the next leader resumes from the record, and every object is written exactly once.

The in-memory store keeps etcd's 128-operation limit. A leader kill is simulated at our
store seam: ``Killing`` lets a leader's first ``budget`` writing transactions through and
raises on the next, before it lands, as if the process died between two transactions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import pytest

from broker.controllers import batches
from broker.controllers.vnfs import VnfController
from broker.models import codec
from broker.models import vnf as model
from broker.placement import claims as cl
from broker.placement.snapshot import Snapshot
from broker.store import keys
from broker.store.memory import MemoryStore
from broker.store.protocol import Compare, Delete, Put, TxnOp, TxnResult
from tests.support import placement as P

SITES = P.regions(2)
VNF = "vepc-000001"
MEMBERS = 60


class LeaderKilled(Exception):
    pass


class Killing(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.budget: int | None = None

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp] = ()
    ) -> TxnResult:
        if any(isinstance(op, Put | Delete) for op in success) and self.budget is not None:
            if self.budget == 0:
                raise LeaderKilled
            self.budget -= 1
        return await super().txn(compares, success, failure)


async def leader(store: Killing, name: str) -> VnfController:
    await store.delete(keys.LEADER)
    ctl = VnfController(store, await store.put(keys.LEADER, name.encode()))
    ctl.kick = lambda vnf_id: None  # type: ignore[method-assign]  # the test steps it
    ctl.snap = await Snapshot.load(store)
    return ctl


async def world() -> Killing:
    store = Killing()
    await P.seed_store(store, SITES, P.paris_latency(SITES))
    desc = model.parse(json.dumps(P.big()).encode())
    record = model.VnfRecord(VNF, desc.tenant, model.to_json(desc))
    await store.put(keys.vnf(VNF), codec.encode(record))
    return store


async def record(store: MemoryStore) -> model.VnfRecord | None:
    kv = await store.get(keys.vnf(VNF))
    return codec.decode(model.VnfRecord, kv.value) if kv is not None else None


async def run(ctl: VnfController, store: MemoryStore, done: str, steps: int = 30) -> None:
    """Step the VNF until it is placed with every object written ("placed") or gone."""
    for _ in range(steps):
        await ctl.step(VNF)
        rec = await record(store)
        if done == "gone" and rec is None:
            return
        if done == "placed" and rec is not None and rec.state is model.VnfState.PLACED:
            written, total = batches.pending(rec)
            if written == total:
                return
    raise AssertionError(f"not {done} after {steps} steps: {await record(store)}")


async def claimed(store: MemoryStore) -> list[str]:
    out = []
    for kv in (await store.get_prefix(keys.CLAIMS))[0]:
        out += [m for m in cl.decode(kv.value) if m.startswith(f"{VNF}/")]
    return out


async def placed(store: Killing) -> int:
    """Place the big VNF with no kill; returns how many writing transactions it took."""
    store.budget = 10**6
    ctl = await leader(store, "first")
    await run(ctl, store, "placed")
    used = 10**6 - store.budget
    store.budget = None
    return used


async def test_a_big_vnf_places_in_batches_and_deletes() -> None:
    store = await world()
    txns = await placed(store)
    rec = await record(store)
    assert rec is not None and len(rec.members) == MEMBERS
    written, total = batches.pending(rec)
    # the claims transaction and 3 batches: the kill tests below stop before each
    assert written == total > 3 * batches.BATCH and txns == 4
    desired, _ = await store.get_prefix(keys.DESIRED)
    assert len(desired) == total
    ports = [kv for kv in desired if kv.key.split("/")[2] == "port"]
    assert len(ports) == MEMBERS * 4
    assert sorted(await claimed(store)) == sorted(f"{VNF}/{m.name}" for m in rec.members)


@pytest.mark.parametrize("kill_before", range(4))
async def test_a_leader_killed_at_each_step_of_placement(kill_before: int) -> None:
    store = await world()
    store.budget = kill_before
    first = await leader(store, "first")
    with pytest.raises(LeaderKilled):
        await run(first, store, "placed")
    store.budget = None
    after = await record(store)
    assert after is not None
    if kill_before:  # the claims transaction landed: the record says how far it got
        assert after.state is model.VnfState.PLACED
        assert batches.pending(after)[0] < batches.pending(after)[1]
    nxt = await leader(store, "next")
    await run(nxt, store, "placed")
    rec = await record(store)
    assert rec is not None
    _, total = batches.pending(rec)
    desired, _ = await store.get_prefix(keys.DESIRED)
    assert len(desired) == total, "an object lost or extra"
    assert all(kv.version == 1 for kv in desired), "an object written twice"
    assert sorted(await claimed(store)) == sorted(f"{VNF}/{m.name}" for m in rec.members)
    assert len(rec.members) == MEMBERS


@pytest.mark.parametrize("kill_before", range(4))
async def test_a_leader_killed_at_each_step_of_deletion(kill_before: int) -> None:
    store = await world()
    await placed(store)
    rec = await record(store)
    assert rec is not None
    await store.put(keys.vnf(VNF), codec.encode(dataclasses.replace(rec, deleted=True)))
    store.budget = kill_before
    first = await leader(store, "first")
    with pytest.raises(LeaderKilled):
        for _ in range(10):
            await first.step(VNF)
    store.budget = None
    nxt = await leader(store, "next")
    for _ in range(10):  # tombstones, in batches
        await nxt.step(VNF)
    desired, _ = await store.get_prefix(keys.DESIRED)
    assert all(json.loads(kv.value)["deleted"] for kv in desired), "an object not tombstoned"
    assert all(kv.version == 2 for kv in desired), "a tombstone written twice"
    for m in rec.members:  # the agents delete the servers
        server = f"{VNF}-{m.name}"
        status = {"kind": "server", "name": server, "observed_generation": 2, "state": "DELETED"}
        await store.put(keys.observed(m.site, "server", server), json.dumps(status).encode())
    await run(nxt, store, "gone")
    assert await claimed(store) == []
    assert await store.get(keys.placement(VNF)) is None

