"""The leader's priority lane (issue 10): DOWN verdicts and promotions are never behind a
re-placement or a batch of other steps; background work waits while they are pending and
resumes when they are done (or when a hold lapses)."""

from __future__ import annotations

import asyncio

from broker.controllers import failover, sitehealth
from broker.controllers.lane import Lane
from broker.failover import limits
from broker.models import codec
from broker.models.site import Health, SiteHealth
from broker.settings import BrokerSettings
from broker.store import keys, urgency
from broker.store.memory import MemoryStore
from tests.unit.broker.controllers.test_failover_controller import (
    VNF,
    lead,
    record,
    report,
    seed,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_background_waits_for_the_holds_and_a_hold_lapses() -> None:
    clock = Clock()
    lane = Lane(hold_s=10.0, clock=clock)
    await asyncio.wait_for(lane.clear(), 1.0)  # nothing held: at once
    lane.hold("verdict:s1")
    lane.hold("promote:v1")
    waiter = asyncio.create_task(lane.clear())
    await settle()
    lane.release("verdict:s1")
    await settle()
    assert not waiter.done(), "one hold is still pending"
    lane.release("promote:v1")
    await asyncio.wait_for(waiter, 1.0)
    assert lane.waited == 1

    lane.hold("promote:v2")  # its standby's agent never reports
    clock.now += 9.9
    assert lane.holds("promote:v2") and lane.pending()
    clock.now += 0.2
    assert not lane.holds("promote:v2") and not lane.pending(), "lapsed after hold_s"


async def test_a_down_verdict_holds_the_lane_until_written(memory_store: MemoryStore) -> None:
    lane = Lane()
    fence = await lead(memory_store)
    ctl = sitehealth.SiteHealthController(memory_store, BrokerSettings(), fence, lane=lane)
    ctl.intended["s1"] = Health.UP
    ctl._decide("s1", Health.DOWN, "agent stream closed")
    assert lane.holds(sitehealth.verdict_key("s1"))
    await ctl.flush()
    assert not lane.pending()
    kv = await memory_store.get(keys.health("s1"))
    assert kv is not None and codec.decode(SiteHealth, kv.value).state is Health.DOWN


async def test_no_replacement_starts_while_a_promotion_is_pending(
    memory_store: MemoryStore,
) -> None:
    await seed(memory_store)
    lane = Lane()
    ctl = failover.FailoverController(
        memory_store, await lead(memory_store), BrokerSettings(), lane=lane
    )
    started: list[str] = []

    async def carry_out(req: limits.Request) -> bool:
        started.append(req.vnf)
        return False

    ctl.replacer.carry_out = carry_out  # type: ignore[method-assign]
    lane.hold(failover.promotion_key("v9"))
    task = asyncio.create_task(ctl.replacer.run())
    try:
        ctl.replacer.ask("v2", "fw-0@s1", 0, 1)
        await asyncio.sleep(0.05)
        assert started == [], "a re-placement waits for the pending promotion"
        lane.release(failover.promotion_key("v9"))
        for _ in range(100):
            if started:
                break
            await asyncio.sleep(0.01)
        assert started == ["v2"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_promotion_is_not_behind_a_batch_of_other_steps(
    memory_store: MemoryStore,
) -> None:
    """Sixty VNFs being stepped slowly (restores, READY reports) and then a site DOWN: the
    VNF whose active was there is stepped at once by the urgent worker, and the others wait
    until its promotion is reported."""
    await seed(memory_store)
    lane = Lane()
    ctl = failover.FailoverController(
        memory_store, await lead(memory_store), BrokerSettings(), lane=lane
    )
    real_step = ctl.step
    order: list[str] = []

    lanes: dict[str, list[bool]] = {}

    async def step(vnf_id: str) -> None:
        order.append(vnf_id)
        lanes.setdefault(vnf_id, []).append(urgency.URGENT.get())  # the store's urgent lane
        if vnf_id == VNF:
            await real_step(vnf_id)
        else:
            await asyncio.sleep(0.05)  # a slow background step

    ctl.step = step  # type: ignore[method-assign]
    ctl.index(await record(memory_store))
    others = [f"bg-{i:02d}" for i in range(60)]
    task = asyncio.create_task(ctl.run())
    try:
        await asyncio.sleep(0.1)  # the VNF's first step (its machines written)
        order.clear()
        lanes.clear()
        for vnf_id in others:
            ctl._mark(vnf_id)
        await asyncio.sleep(0.01)  # the first background batch is under way
        down = SiteHealth("s1", Health.DOWN, 1)
        await memory_store.put(keys.health("s1"), codec.encode(down))
        for _ in range(200):
            if VNF in order:
                break
            await asyncio.sleep(0.005)
        assert VNF in order, "the promotion was stepped within a second"
        before = [v for v in order[: order.index(VNF)] if v != VNF]
        assert len(before) <= failover.PARALLEL, "at most the batch already under way"
        assert lane.holds(failover.promotion_key(VNF)), "FAILING_OVER: still held"
        await asyncio.sleep(0.2)
        assert len([v for v in order if v != VNF]) <= failover.PARALLEL, (
            "nothing else is stepped while the promotion is pending"
        )
        await report(memory_store, "s2", "fw-1", 2, "active")  # the promotion is reported
        for _ in range(400):
            if all(v in order for v in others):
                break
            await asyncio.sleep(0.01)
        assert not lane.holds(failover.promotion_key(VNF))
        assert all(v in order for v in others), "the rest resumes once it is done"
        assert lanes[VNF][0] is True, "the promotion's etcd calls take the urgent lane"
        assert not any(any(lanes[v]) for v in others)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
