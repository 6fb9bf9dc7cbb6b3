"""The reconciler against the simulated site: order, idempotence, retries, statuses."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siteagent import models, reconciler
from siteagent.drivers import sim

FAST = reconciler.Backoff(base=0.001, cap=0.01)
SHA = "1" * 64
DEDICATED = {"hw:cpu_policy": "dedicated"}


class Recording:
    """The sim driver, with every call written down (a wrapper at our own seam)."""

    def __init__(self, site: sim.SimSite) -> None:
        self.site = site
        self.calls: list[tuple[str, str, str]] = []

    async def inventory(self) -> models.Inventory:
        return await self.site.inventory()

    async def usage(self) -> models.Usage:
        return await self.site.usage()

    async def apply(self, obj: models.DesiredObject) -> models.ObjectStatus:
        self.calls.append(("apply", obj.kind, obj.name))
        return await self.site.apply(obj)

    async def observe(self, kind: str, name: str) -> models.ObjectStatus | None:
        self.calls.append(("observe", kind, name))
        return await self.site.observe(kind, name)

    async def delete(self, kind: str, name: str) -> models.ObjectStatus:
        self.calls.append(("delete", kind, name))
        return await self.site.delete(kind, name)

    async def close(self) -> None:
        await self.site.close()


def desired(kind: str, name: str, gen: int = 1, **spec: Any) -> models.DesiredObject:
    return models.DesiredObject(kind, name, gen, spec)


def gone(kind: str, name: str, gen: int) -> models.DesiredObject:
    return models.DesiredObject(kind, name, gen, {}, deleted=True)


VNF = [
    desired("server", "du", project="p", flavor="pinned", image="img", ports=["fh"]),
    desired("port", "fh", project="p", network="net", vnic_type="direct"),
    desired("subnet", "sub", project="p", network="net", cidr="10.1.0.0/24"),
    desired("network", "net", project="p", network_type="vlan", physnet="physnet1"),
    desired("image", "img", disk_format="raw", size=1, sha256=SHA),
    desired("flavor", "pinned", vcpus=2, ram_mb=1024, extra_specs=DEDICATED),
]


@pytest.fixture
def driver() -> Recording:
    return Recording(sim.SimSite.generated("edge-1", hosts=2))


@pytest.fixture
async def running(driver: Recording) -> AsyncIterator[reconciler.Reconciler]:
    rec = reconciler.Reconciler(driver, backoff=FAST, poll_interval=0.001, rng=random.Random(1))
    async with started(rec):
        yield rec


@contextlib.asynccontextmanager
async def started(rec: reconciler.Reconciler) -> AsyncIterator[reconciler.Reconciler]:
    task = asyncio.create_task(rec.run())
    try:
        yield rec
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def converge(rec: reconciler.Reconciler, *objs: models.DesiredObject) -> None:
    for obj in objs:
        await rec.submit(obj)
    await asyncio.wait_for(rec.wait_idle(), timeout=10)


def states(rec: reconciler.Reconciler) -> dict[str, str]:
    return {s.key: s.state.name for s in rec.observed()}


async def test_applies_in_dependency_order(
    running: reconciler.Reconciler, driver: Recording
) -> None:
    await converge(running, *VNF)
    assert [kind for _, kind, _ in driver.calls] == [
        "image",
        "flavor",
        "network",
        "subnet",
        "port",
        "server",
    ]
    assert set(states(running).values()) == {"READY"}
    assert running.snapshot() == {obj.key: 1 for obj in VNF}


async def test_the_data_path_is_applied_before_the_cloud_kinds(
    running: reconciler.Reconciler, driver: Recording
) -> None:
    # queued together with a VNF, and after it: the host's data path still goes first
    # (the sim driver refuses the kind, which does not matter to the order)
    await converge(running, *VNF, desired("datapath", "host", bridges=[]))
    applied = [kind for op, kind, _ in driver.calls if op == "apply"]
    assert applied[0] == "datapath"
    assert applied[1:] == ["image", "flavor", "network", "subnet", "port", "server"]


async def test_deletes_first_and_in_reverse_order(
    running: reconciler.Reconciler, driver: Recording
) -> None:
    await converge(running, *VNF)
    driver.calls.clear()
    await converge(
        running,
        desired("network", "other", project="p"),
        *(gone(o.kind, o.name, 2) for o in VNF),
    )
    assert driver.calls == [
        ("delete", "server", "du"),
        ("delete", "port", "fh"),
        ("delete", "subnet", "sub"),
        ("delete", "network", "net"),
        ("delete", "flavor", "pinned"),
        ("delete", "image", "img"),
        ("apply", "network", "other"),
    ]
    assert running.snapshot()["server/du"] == 2
    assert states(running)["server/du"] == "DELETED"
    assert (await driver.usage()).projects == {"p": {"networks": 1}}


async def test_redelivery_is_harmless(running: reconciler.Reconciler, driver: Recording) -> None:
    await converge(running, *VNF)
    calls, usage = len(driver.calls), await driver.usage()
    assert [await running.submit(obj) for obj in VNF] == [False] * len(VNF)
    older = desired("flavor", "pinned", 0, vcpus=64, ram_mb=1, extra_specs=DEDICATED)
    assert await running.submit(older) is False
    await asyncio.wait_for(running.wait_idle(), timeout=10)
    assert len(driver.calls) == calls
    assert await driver.usage() == usage


async def test_a_newer_generation_is_applied(running: reconciler.Reconciler) -> None:
    await converge(running, *VNF)
    bigger = desired("flavor", "pinned", 2, vcpus=4, ram_mb=1024, extra_specs=DEDICATED)
    server2 = desired("server", "du", 2, project="p", flavor="pinned", image="img", ports=["fh"])
    assert await running.submit(bigger) and await running.submit(server2)
    await asyncio.wait_for(running.wait_idle(), timeout=10)
    assert running.snapshot()["server/du"] == 2
    assert (await running.driver.usage()).projects["p"]["cores"] == 4


async def test_temporary_failures_are_retried(
    running: reconciler.Reconciler, driver: Recording
) -> None:
    seen: list[models.ObjectStatus] = []
    driver.site.fail_next("network", message="neutron 503", times=3)
    reader = asyncio.create_task(_collect(running, seen))
    await asyncio.sleep(0)
    await converge(running, desired("network", "n", project="p"))
    assert driver.calls.count(("apply", "network", "n")) == 4
    assert running.snapshot() == {"network/n": 1}
    await asyncio.sleep(0)
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    # the three identical failures are one status change: reported once
    assert [(s.state.name, s.temporary, s.message) for s in seen] == [
        ("FAILED", True, "network 'n': neutron 503"),
        ("READY", False, ""),
    ]


async def test_a_dependency_that_comes_later_is_waited_for(
    running: reconciler.Reconciler, driver: Recording
) -> None:
    driver.site.fail_next("network", times=2)
    await converge(
        running,
        desired("network", "n", project="p"),
        desired("port", "p1", project="p", network="n"),
    )
    assert states(running) == {"network/n": "READY", "port/p1": "READY"}
    assert ("apply", "port", "p1") in driver.calls


async def test_permanent_failures_wait_for_a_new_generation(
    running: reconciler.Reconciler, driver: Recording
) -> None:
    driver.site.fail_next("flavor", temporary=False, message="flavor name taken")
    await converge(running, desired("flavor", "f", vcpus=1, ram_mb=64))
    status = running.status("flavor", "f")
    assert status is not None
    assert (status.state.name, status.temporary) == ("FAILED", False)
    assert "flavor name taken" in status.message
    assert running.snapshot() == {}
    await asyncio.sleep(0.05)
    assert driver.calls == [("apply", "flavor", "f")]
    await converge(running, desired("flavor", "f", 2, vcpus=1, ram_mb=64))
    assert running.snapshot() == {"flavor/f": 2}


async def test_invalid_specs_fail_permanently_naming_the_field(
    running: reconciler.Reconciler,
) -> None:
    await converge(running, desired("flavor", "f", vcpus=0, ram_mb=64))
    status = running.status("flavor", "f")
    assert status is not None and not status.temporary
    assert "spec.vcpus: must be an integer ≥ 1" in status.message


async def test_pending_objects_are_polled_until_ready() -> None:
    config = sim.SimSite.generated("e", hosts=1).config
    site = sim.SimSite.from_dict({**_as_dict(config), "build_polls": 3})
    driver = Recording(site)
    seen: list[models.ObjectStatus] = []
    rec = reconciler.Reconciler(driver, on_status=seen.append, poll_interval=0.001)
    async with started(rec):
        await converge(rec, *VNF)
    assert driver.calls.count(("observe", "server", "du")) == 3
    assert [s.state.name for s in seen if s.kind == "server"] == ["PENDING", "READY"]


async def test_an_object_that_vanishes_while_pending_is_created_again() -> None:
    site = sim.SimSite.from_dict({**_as_dict(sim.SimSite.generated("e").config), "build_polls": 5})
    driver = Recording(site)
    building = asyncio.Event()

    def on_status(status: models.ObjectStatus) -> None:
        if status.kind == "server" and status.state is models.ObjectState.PENDING:
            building.set()

    rec = reconciler.Reconciler(driver, on_status=on_status, poll_interval=0.01)
    async with started(rec):
        await rec.submit(desired("flavor", "f", vcpus=1, ram_mb=64))
        await rec.submit(desired("image", "i", disk_format="raw", size=1, sha256=SHA))
        await rec.submit(desired("server", "s", project="p", flavor="f", image="i"))
        await asyncio.wait_for(building.wait(), timeout=10)
        await site.delete("server", "s")  # someone removed it behind our back
        await asyncio.wait_for(rec.wait_idle(), timeout=10)
    assert driver.calls.count(("apply", "server", "s")) == 2
    assert rec.snapshot()["server/s"] == 1


async def test_a_newer_generation_during_an_operation_wins() -> None:
    site = sim.SimSite.from_dict({**_as_dict(sim.SimSite.generated("e").config), "latency_s": 0.02})
    rec = reconciler.Reconciler(site)
    async with started(rec):
        await rec.submit(desired("network", "n", project="p"))
        await asyncio.sleep(0.005)  # generation 1 is in flight
        await rec.submit(desired("network", "n", 2, project="p", shared=True))
        await asyncio.wait_for(rec.wait_idle(), timeout=10)
    assert rec.snapshot() == {"network/n": 2}
    status = rec.status("network", "n")
    assert status is not None and status.observed_generation == 2


async def test_deleting_what_was_never_applied(running: reconciler.Reconciler) -> None:
    await converge(running, gone("port", "old", 7))
    status = running.status("port", "old")
    assert status is not None
    assert (status.state.name, status.observed_generation) == ("DELETED", 7)
    assert running.snapshot() == {"port/old": 7}


class Broken(Recording):
    async def apply(self, obj: models.DesiredObject) -> models.ObjectStatus:
        self.calls.append(("apply", obj.kind, obj.name))
        if len(self.calls) < 3:
            raise KeyError("driver bug")
        return await self.site.apply(obj)


async def test_a_driver_bug_fails_the_object_not_the_reconciler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = Broken(sim.SimSite.generated("e"))
    seen: list[models.ObjectStatus] = []
    rec = reconciler.Reconciler(driver, on_status=seen.append, backoff=FAST)
    async with started(rec):
        await converge(rec, desired("network", "n", project="p"))
    assert [(s.state.name, s.temporary, s.message) for s in seen] == [
        ("FAILED", True, "'driver bug'"),
        ("READY", False, ""),
    ]
    assert "driver raised KeyError" in caplog.text


async def test_statuses_coalesce_per_object_and_replay(running: reconciler.Reconciler) -> None:
    await converge(running, *VNF)
    await converge(
        running,
        desired(
            "network", "net", 2, project="p", network_type="vlan", physnet="physnet1", shared=True
        ),
    )
    reader = running.statuses()
    first = [await anext(reader) for _ in range(len(VNF))]
    assert {s.key for s in first} == {o.key for o in VNF}
    assert next(s for s in first if s.key == "network/net").observed_generation == 2
    running.replay()
    again = [await anext(reader) for _ in range(len(VNF))]
    assert sorted(again, key=lambda s: s.key) == sorted(first, key=lambda s: s.key)
    await reader.aclose()


async def test_a_second_run_is_refused(running: reconciler.Reconciler) -> None:
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already running"):
        await running.run()


async def test_a_thousand_idle_reconcilers_do_nothing() -> None:
    sites = [sim.SimSite.generated(f"s{i}", hosts=1, cells=1) for i in range(1000)]
    recs = [reconciler.Reconciler(site) for site in sites]
    tasks = [asyncio.create_task(rec.run()) for rec in recs]
    try:
        for rec in recs:
            await rec.submit(desired("network", "n", project="p"))
        await asyncio.wait_for(asyncio.gather(*(rec.wait_idle() for rec in recs)), timeout=30)
        assert all(site.calls == 1 for site in sites)
        await asyncio.sleep(0.2)
        assert all(site.calls == 1 for site in sites)  # idle means no polling, no calls
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize(
    ("attempt", "floor", "low", "high"),
    [
        (0, 0.0, 0.25, 0.5),
        (1, 0.0, 0.5, 1.0),
        (3, 0.0, 2.0, 4.0),
        (20, 0.0, 30.0, 60.0),
        (0, 5.0, 5.0, 5.0),
        (0, 600.0, 60.0, 60.0),
    ],
)
def test_backoff_table(attempt: int, floor: float, low: float, high: float) -> None:
    rng = random.Random(7)
    delays = [reconciler.Backoff().delay(attempt, rng, floor=floor) for _ in range(200)]
    assert low <= min(delays) and max(delays) <= high
    if low < high:
        assert max(delays) - min(delays) > (high - low) / 4  # jitter actually spreads


@settings(database=None)
@given(attempt=st.integers(min_value=0, max_value=10_000), seed=st.integers())
def test_backoff_never_exceeds_its_cap(attempt: int, seed: int) -> None:
    backoff = reconciler.Backoff(base=0.1, factor=3.0, cap=30.0)
    delay = backoff.delay(attempt, random.Random(seed))
    assert 0 < delay <= 30.0


async def _collect(rec: reconciler.Reconciler, into: list[models.ObjectStatus]) -> None:
    async for status in rec.statuses():
        into.append(status)


def _as_dict(config: Any) -> dict[str, Any]:
    import dataclasses

    data = dataclasses.asdict(config)
    assert isinstance(data, dict)
    return data
