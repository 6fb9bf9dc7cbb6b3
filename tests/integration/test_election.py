"""Leader election and fencing on a real etcd (invariants 2 and 3).

Each Campaign gets its own EtcdStore (as separate replicas would) on one shared root. The
paused-leader test runs the leader in a subprocess and freezes it with SIGSTOP: a real
process that stops refreshing its lease without knowing it, then wakes up and writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from tests.support import etcd as etcd_support

from broker import errors
from broker.election import campaign, fencing
from broker.settings import ElectionSettings
from broker.store import keys
from broker.store import protocol as p
from broker.store.etcd import EtcdStore

pytestmark = pytest.mark.etcd

SETTINGS = ElectionSettings(lease_ttl=2)


class Replicas:
    """Campaigns, each on its own store, all running until the test ends."""

    def __init__(self, cluster: etcd_support.Cluster, root: str) -> None:
        self.cluster, self.root = cluster, root
        self.stores: list[EtcdStore] = []
        self.tasks: list[asyncio.Task[None]] = []

    def store(self) -> EtcdStore:
        store = EtcdStore.from_settings(self.cluster.settings(root=self.root))
        self.stores.append(store)
        return store

    def start(self, name: str) -> campaign.Campaign:
        c = campaign.Campaign(self.store(), name, SETTINGS)
        self.tasks.append(asyncio.create_task(c.run(), name=f"campaign-{name}"))
        return c

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for store in self.stores:
            await store.close()


@pytest.fixture
async def replicas(etcd_server: etcd_support.Cluster, etcd_root: str) -> AsyncIterator[Replicas]:
    group = Replicas(etcd_server, etcd_root)
    yield group
    await group.close()


async def eventually(check: Callable[[], bool], within: float = 15.0) -> float:
    """Seconds until ``check()`` held; fails after ``within`` seconds."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, "condition never became true"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


def leaders(campaigns: list[campaign.Campaign]) -> list[campaign.Campaign]:
    return [c for c in campaigns if c.is_leader]


async def test_exactly_one_leader_and_everyone_knows_it(replicas: Replicas) -> None:
    campaigns = [replicas.start(f"broker-{i}") for i in range(3)]
    await eventually(lambda: len(leaders(campaigns)) == 1)
    (leader,) = leaders(campaigns)
    for _ in range(50):  # 1 s of watching: never two leaders, never a change
        assert leaders(campaigns) == [leader]
        await asyncio.sleep(0.02)
    assert await fencing.current_leader(replicas.store()) == (leader.name, leader.fence)
    await eventually(lambda: all(c.leader_name == leader.name for c in campaigns))
    assert all(c.fence is None for c in campaigns if c is not leader)


async def test_clean_resign_hands_over_fast(replicas: Replicas) -> None:
    campaigns = [replicas.start(f"broker-{i}") for i in range(3)]
    await eventually(lambda: len(leaders(campaigns)) == 1)
    (old,) = leaders(campaigns)
    old_fence = old.fence
    assert old_fence is not None
    index = campaigns.index(old)

    started = time.monotonic()
    replicas.tasks[index].cancel()
    others = [c for c in campaigns if c is not old]
    await eventually(lambda: len(leaders(others)) == 1)
    handover = time.monotonic() - started

    (new,) = leaders(others)
    assert not old.is_leader
    assert new.fence is not None and new.fence > old_fence
    # well under the 2 s lease: the key was deleted, not left to expire
    assert handover < 1.0, f"handover took {handover:.3f}s"
    assert await fencing.current_leader(replicas.store()) == (new.name, new.fence)


async def test_lease_loss_deposes_and_fences_the_old_leader(replicas: Replicas) -> None:
    a = replicas.start("a")
    await eventually(lambda: a.is_leader)
    b = replicas.start("b")
    await eventually(lambda: b.leader_name == "a")
    fence_a = a.fence
    assert fence_a is not None
    writer = replicas.store()
    await fencing.fenced_txn(writer, fence_a, [p.Put("desired/s1", b"from-a")])

    # what a lease expiry does, now: the key goes with the lease
    kv = await writer.get(keys.LEADER)
    assert kv is not None
    await writer.revoke_lease(kv.lease)

    # a new term begins; the deposed "a" campaigns again too, so either may win it
    def new_term() -> bool:
        leaders = [r for r in (a, b) if r.is_leader]
        return len(leaders) == 1 and leaders[0].fence != fence_a

    await eventually(new_term)
    fence_b = next(r.fence for r in (a, b) if r.is_leader)
    assert fence_b is not None and fence_b > fence_a
    with pytest.raises(errors.FencedOut) as fenced:
        await fencing.fenced_txn(writer, fence_a, [p.Put("desired/s1", b"stale-a")])
    assert fenced.value.fence == fence_a
    result = await fencing.fenced_txn(writer, fence_b, [p.Put("desired/s1", b"from-b")])
    kv = await writer.get("desired/s1")
    assert kv is not None and kv.value == b"from-b" and kv.mod_revision == result.revision


async def test_fenced_txn_tells_conflict_from_fenced_out(replicas: Replicas) -> None:
    a = replicas.start("a")
    await eventually(lambda: a.is_leader)
    fence = a.fence
    assert fence is not None
    store = replicas.store()
    written = await store.put("desired/x", b"1")
    stale = p.Compare("desired/x", p.Target.MOD, p.Op.EQUAL, written - 1)
    with pytest.raises(errors.Conflict):
        await fencing.fenced_txn(store, fence, [p.Put("desired/x", b"2")], [stale])
    result = await fencing.fenced_txn(
        store, fence, [p.Put("desired/x", b"2")], [stale], failure_ops=[p.Get("desired/x")]
    )
    assert not result.succeeded
    assert [kv.value for kv in result.responses[0]] == [b"1"]
    with pytest.raises(TypeError):
        await fencing.fenced_txn(store, fence, [], failure_ops=[p.Put("x", b"")])  # type: ignore[list-item]
    kv = await store.get("desired/x")
    assert kv is not None and kv.value == b"1"
    with pytest.raises(errors.FencedOut):
        await fencing.fenced_txn(store, fence + 1, [p.Put("desired/x", b"3")])


async def test_run_while_leading_cancels_controllers_on_loss(replicas: Replicas) -> None:
    runs: list[tuple[str, int]] = []
    cancelled: list[tuple[str, int]] = []

    def controllers(name: str) -> Callable[[int], Awaitable[None]]:
        async def run(fence: int) -> None:
            runs.append((name, fence))
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append((name, fence))
                raise

        return run

    a, b = replicas.start("a"), replicas.start("b")
    toggles = [
        asyncio.create_task(a.run_while_leading(controllers("a"))),
        asyncio.create_task(b.run_while_leading(controllers("b"))),
    ]
    try:
        await eventually(lambda: len(runs) == 1)
        first_name, first_fence = runs[0]
        first = a if first_name == "a" else b
        assert first.fence == first_fence and not cancelled

        kv = await replicas.store().get(keys.LEADER)
        assert kv is not None
        await replicas.store().revoke_lease(kv.lease)

        await eventually(lambda: cancelled == [(first_name, first_fence)])
        await eventually(lambda: len(runs) == 2)
        # who wins the next term is a race (the deposed replica campaigns again too; under
        # load it can be first): the toggle follows whoever won, with the new term's fence
        name, fence = runs[1]
        winner, loser = (a, b) if name == "a" else (b, a)
        assert fence > first_fence and winner.fence == fence and not loser.is_leader
        assert all(not t.done() for t in toggles)
    finally:
        for task in toggles:
            task.cancel()
        for task in toggles:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert (runs[1][0], runs[1][1]) in cancelled  # cancelling the toggle stops controllers


PAUSED_LEADER = """
import asyncio, sys
from broker import errors
from broker.election import campaign, fencing
from broker.settings import ElectionSettings, EtcdSettings
from broker.store import protocol as p
from broker.store.etcd import EtcdStore

async def main() -> None:
    endpoint, root = sys.argv[1], sys.argv[2]
    store = EtcdStore.from_settings(EtcdSettings(endpoints=(endpoint,), root=root))
    c = campaign.Campaign(store, "paused", ElectionSettings(lease_ttl=2))
    runner = asyncio.create_task(c.run())
    fence = (await c.wait_leading()).fence
    print("LEADING", fence, flush=True)
    n = 0
    while True:  # a controller that keeps writing with the fence it was given
        n += 1
        try:
            await fencing.fenced_txn(store, fence, [p.Put("probe", b"paused-%d" % n)])
            print("WROTE", n, flush=True)
        except errors.FencedOut:
            print("FENCED", n, flush=True)
            break
        except errors.StoreUnavailable:
            print("UNAVAILABLE", n, flush=True)
        await asyncio.sleep(0.05)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await store.close()

asyncio.run(main())
"""


async def read_line(process: asyncio.subprocess.Process, prefix: str, within: float = 20.0) -> str:
    assert process.stdout is not None

    async def find() -> str:
        while True:
            raw = await process.stdout.readline()  # type: ignore[union-attr]
            assert raw, f"the paused leader exited before printing {prefix!r}"
            line = raw.decode().strip()
            if line.startswith(prefix):
                return line

    return await asyncio.wait_for(find(), within)


async def test_a_paused_leader_is_replaced_and_its_writes_never_land(
    replicas: Replicas, etcd_server: etcd_support.Cluster
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PAUSED_LEADER,
        etcd_server.endpoints[0],
        replicas.root,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        fence_a = int((await read_line(process, "LEADING")).split()[1])
        b = replicas.start("b")
        await eventually(lambda: b.leader_name == "paused")
        await read_line(process, "WROTE")

        process.send_signal(signal.SIGSTOP)
        paused = time.monotonic()
        await eventually(lambda: b.is_leader, within=20)
        took = time.monotonic() - paused
        fence_b = b.fence
        assert fence_b is not None and fence_b > fence_a
        assert took > 0.5, "b cannot lead before the paused leader's lease runs out"
        store = replicas.store()
        mine = await fencing.fenced_txn(store, fence_b, [p.Put("probe", b"from-b")])

        process.send_signal(signal.SIGCONT)
        await read_line(process, "FENCED")
        assert await asyncio.wait_for(process.wait(), 20) == 0

        kv = await store.get("probe")
        assert kv is not None and kv.value == b"from-b" and kv.mod_revision == mine.revision
        # no write of the paused leader landed after b's term began
        watch = store.watch_prefix("probe", start_revision=fence_a)
        try:
            history: list[p.WatchEvent] = []
            while not history or history[-1].mod_revision < mine.revision:
                history.append(await asyncio.wait_for(anext(watch), 10))
        finally:
            await watch.aclose()
        stale = [e for e in history if e.value.startswith(b"paused") and e.mod_revision > fence_b]
        assert history[0].value.startswith(b"paused") and not stale
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            await process.wait()


@pytest.mark.parametrize("stall", [3.0, 5.0])
async def test_a_stalled_event_loop_keeps_its_leadership(
    replicas: Replicas, stall: float
) -> None:
    """A connect storm can block the replica's loop for longer than the lease's TTL; the
    lease is kept on a thread of its own, so the term (fence, leader key) survives it and
    no follower takes over meanwhile."""
    leader = replicas.start("busy")
    await eventually(lambda: leader.is_leader)
    term = await leader.wait_leading()
    follower = replicas.start("waiting")
    await asyncio.sleep(1.0)  # the follower watches the key; the leader refreshed by now
    time.sleep(stall)  # noqa: ASYNC251 -- a loop blocked for 1.5-2.5 TTLs is the point
    await asyncio.sleep(3 * SETTINGS.lease_ttl)  # let both notice whatever happened
    assert leader.is_leader and leader.fence == term.fence and not term.lost.is_set()
    assert not follower.is_leader
    kv = await replicas.stores[0].get(keys.LEADER)
    assert kv is not None and kv.value == b"busy" and kv.create_revision == term.fence
