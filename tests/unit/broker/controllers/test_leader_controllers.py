"""What the leader does when one of its controllers fails (``broker.running.controllers``).

A transient store error restarts the controllers within the same term; a fenced-out
write ends them for the term; anything else is a bug and propagates (the replica stops).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker import errors, running
from broker.controllers import registry
from broker.settings import BrokerSettings
from broker.store import keys
from broker.store.memory import MemoryStore


class Scripted:
    """Stands in for one controller class: each ``run()`` takes the next scripted step."""

    def __init__(self, steps: list[BaseException | None]) -> None:
        self.steps = steps
        self.runs = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Scripted:
        return self

    async def run(self) -> None:
        self.runs += 1
        step = self.steps.pop(0) if self.steps else None
        if step is not None:
            raise step
        await asyncio.Event().wait()  # a healthy controller runs until cancelled


class Idle(Scripted):
    def __init__(self) -> None:
        super().__init__([])


ENTRIES: list[registry.Entry] = []


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(steps: list[BaseException | None]) -> Scripted:
        health = Scripted(steps)
        # the registered controllers, the first scripted and the others idle
        names = [e.name for e in registry.leader()]
        ENTRIES[:] = [registry.Entry(names[0], health)] + [
            registry.Entry(name, Idle()) for name in names[1:]
        ]
        monkeypatch.setattr(running, "RESTART_DELAY", 0.01)
        return health

    return install


def run_controllers() -> Any:
    store: Any = MemoryStore()
    return running.controllers(
        store, BrokerSettings(name="b1"), fence=7, headroom=object(), entries=ENTRIES  # type: ignore[arg-type]
    )


def test_every_controller_is_registered_once() -> None:
    names = sorted(e.name for e in registry.leader())
    assert names == [
        "drills", "event retention", "failover", "image replication", "quota sync", "rto feed",
        "site health", "stitching", "survivability", "vnf placement",
    ]
    with pytest.raises(errors.AlreadyExists):
        registry.controller("site health")(lambda ctx: Idle())


async def test_a_store_outage_restarts_the_controllers_in_the_same_term(scripted: Any) -> None:
    health = scripted([errors.StoreUnavailable("etcd down"), errors.StoreUnavailable("still")])
    task = asyncio.create_task(run_controllers())
    for _ in range(200):
        if health.runs >= 3:
            break
        await asyncio.sleep(0.01)
    assert health.runs == 3, "controllers were not restarted after the store came back"
    assert not task.done(), "a transient store error must not end the leader's controllers"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_fenced_out_write_ends_the_controllers_for_this_term(scripted: Any) -> None:
    health = scripted([errors.FencedOut("leader key changed", fence=7)])
    await asyncio.wait_for(run_controllers(), timeout=5)
    assert health.runs == 1


async def test_a_controller_bug_propagates(scripted: Any) -> None:
    scripted([ValueError("bug")])
    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(run_controllers(), timeout=5)
    assert caught.group_contains(ValueError)


async def test_the_vnf_resync_outlives_an_etcd_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    """The periodic resync reads etcd on its own; an outage there must not end it."""
    from broker.controllers import vnfs

    class Flaky(MemoryStore):
        failures = 2
        reads = 0

        async def get_prefix(self, prefix: str) -> Any:
            if prefix == keys.VNFS:
                self.reads += 1
                if self.reads <= self.failures:
                    raise errors.StoreUnavailable("etcd down")
            return await super().get_prefix(prefix)

    monkeypatch.setattr(vnfs, "RESYNC_S", 0.01)
    store = Flaky()
    controller = vnfs.VnfController(store, 1)
    task = asyncio.create_task(controller._resync())
    for _ in range(300):
        if store.reads > store.failures:
            break
        await asyncio.sleep(0.01)
    assert store.reads > store.failures, "the resync stopped at the first failed read"
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
