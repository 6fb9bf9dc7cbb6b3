"""What keeps one replica standing under a connect storm, on real mTLS over real etcd.

- admission control: beyond ``gateway.max_opening_streams`` a stream is refused at once
  as busy, with a retry_after, writing nothing; the agent's session waits that long
  (plus its own jitter) instead of dialling again at once;
- a replica lease that runs out under the gateway is replaced: no stream ends, no
  opening is refused, and the live-session records come back under the new lease.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from meridian.v1 import agent_pb2 as pb

from broker.store import keys
from broker.store.etcd import EtcdStore
from broker.store.protocol import KeyValue
from siteagent.drivers.sim import SimSite
from siteagent.reconciler import Reconciler
from siteagent.session import RETRY_AFTER_MS, Session
from siteagent.settings import AgentSettings, SessionSettings
from tests.support import gateway as gw

pytestmark = [pytest.mark.etcd, pytest.mark.grpc]

SITES = ["site-a", "site-b", "site-c"]
T = TypeVar("T")


@pytest.fixture
def pki(tmp_path: Path) -> gw.Layout:
    return gw.make_pki(tmp_path / "pki", SITES)


async def until(probe: Callable[[], Awaitable[T | None]] | Callable[[], T], within: float) -> T:
    """Poll ``probe`` (sync or async) until it gives something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        got = probe()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got  # type: ignore[return-value]
        assert loop.time() < deadline, f"not within {within}s"
        await asyncio.sleep(0.05)


Call = grpc.aio.StreamStreamCall[pb.AgentMessage, pb.BrokerMessage]


async def welcomed(call: Call, site: str) -> None:
    await call.write(gw.hello(site))
    reply = await asyncio.wait_for(call.read(), 10)
    assert reply.WhichOneof("body") == "welcome", reply


async def test_beyond_the_bound_streams_are_refused_busy_and_nothing_is_written(
    etcd_store: EtcdStore, pki: gw.Layout
) -> None:
    await gw.register(etcd_store, *SITES)
    async with gw.running_gateway(
        etcd_store,
        pki,
        max_opening_streams=1,
        busy_retry_after=1.5,
        busy_retry_after_max=4.0,
        hello_timeout=30.0,
    ) as running:
        creds = {site: gw.agent_credentials(pki, site) for site in SITES}
        async with gw.raw_stream(running.address, creds["site-a"]) as holder:
            # site-a's stream is opening (no Hello yet): it holds the only place
            await until(lambda: running.gateway.admission.opening == 1, 10)
            async with gw.raw_stream(running.address, creds["site-b"]) as call:
                # the busy replica reads the Hello before refusing, so the agent's write
                # never fails and the Refusal (with its delay) is always readable
                await call.write(gw.hello("site-b"))
                refusal = (await asyncio.wait_for(call.read(), 10)).refusal
                assert refusal.code == pb.REFUSAL_UNAVAILABLE
                assert "busy" in refusal.reason and "max_opening_streams" in refusal.reason
                assert 1500 <= refusal.retry_after_ms <= 4000
                assert await call.code() == grpc.StatusCode.UNAVAILABLE
                trailers = dict(await call.trailing_metadata())
                assert trailers[RETRY_AFTER_MS] == str(refusal.retry_after_ms)
            assert await etcd_store.get(keys.sitestatus("site-b")) is None
            assert await etcd_store.get(keys.inventory("site-b")) is None
            assert running.gateway.refusals == {"BUSY": 1}
            # once the holder is welcomed, its place is free again
            await welcomed(holder, "site-a")
            await until(lambda: running.gateway.admission.opening == 0, 10)
            async with gw.raw_stream(running.address, creds["site-c"]) as call:
                await welcomed(call, "site-c")
                # freed once its snapshot is queued, just after the Welcome went out
                await until(lambda: running.gateway.admission.opened_total == 2, 10)


def agent_settings(pki: gw.Layout, site: str, address: str) -> AgentSettings:
    return AgentSettings(
        site_id=site,
        tls=gw.agent_tls(pki, site),
        session=SessionSettings(brokers=(address,), connect_timeout=10.0),
    )


async def test_agent_waits_the_retry_after_a_busy_replica_names(
    etcd_store: EtcdStore, pki: gw.Layout
) -> None:
    await gw.register(etcd_store, *SITES)
    retry_after = 2.0
    async with gw.running_gateway(
        etcd_store,
        pki,
        max_opening_streams=1,
        busy_retry_after=retry_after,
        busy_retry_after_max=retry_after,
        hello_timeout=30.0,
    ) as running:
        settings = agent_settings(pki, "site-b", running.address)
        driver = SimSite.generated("site-b", hosts=1, cells=1, seed=1)
        reconciler = Reconciler(driver)
        session = Session(settings, driver, reconciler)
        creds = gw.agent_credentials(pki, "site-a")
        async with gw.raw_stream(running.address, creds) as holder:
            await until(lambda: running.gateway.admission.opening == 1, 10)
            tasks = [asyncio.create_task(reconciler.run()), asyncio.create_task(session.run())]
            try:
                await until(lambda: session.stats.refused == 1, 15)
                refused_at = time.monotonic()
                # a hammering agent would have dialled again within its 0.1 s backoff
                await asyncio.sleep(retry_after * 0.75)
                assert session.stats.connects == 1 and not session.stats.connected.is_set()
                await welcomed(holder, "site-a")
                await asyncio.wait_for(session.stats.connected.wait(), 15)
                waited = time.monotonic() - refused_at
                assert session.stats.connects == 2 and session.stats.welcomed == 1
                assert waited >= retry_after - 0.1, f"came back after {waited:.2f}s"
                assert running.gateway.refusals == {"BUSY": 1}
                assert await etcd_store.get(keys.sitestatus("site-b")) is not None
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)


async def record(store: EtcdStore, site: str) -> KeyValue | None:
    return await store.get(keys.sitestatus(site))


async def test_a_lost_replica_lease_is_replaced_and_no_stream_ends(
    etcd_store: EtcdStore, pki: gw.Layout
) -> None:
    await gw.register(etcd_store, *SITES)
    async with gw.running_gateway(etcd_store, pki) as running:
        creds = {site: gw.agent_credentials(pki, site) for site in SITES}
        async with gw.raw_stream(running.address, creds["site-a"]) as a:
            await welcomed(a, "site-a")
            first = await record(etcd_store, "site-a")
            assert first is not None and first.lease
            # the lease runs out behind the gateway's back: its records go with it
            await etcd_store.revoke_lease(first.lease)
            assert await record(etcd_store, "site-a") is None
            # a heartbeat right after is acked (it writes nothing: liveness is judged in
            # memory); the lease keeper takes a new lease and records the session again
            await a.write(pb.AgentMessage(heartbeat=pb.Heartbeat(seq=1)))
            assert (await asyncio.wait_for(a.read(), 10)).heartbeat_ack.seq == 1
            now = await until(lambda: record(etcd_store, "site-a"), 10)
            assert now.lease not in (0, first.lease)
            # a stream opening under a lost lease is welcomed, not refused
            second = now.lease
            await etcd_store.revoke_lease(second)
            async with gw.raw_stream(running.address, creds["site-b"]) as b:
                await welcomed(b, "site-b")
                kv_b = await record(etcd_store, "site-b")
                assert kv_b is not None and kv_b.lease not in (0, first.lease, second)
                # site-a's record, taken by that lease too, comes back without a heartbeat
                back = await until(lambda: record(etcd_store, "site-a"), 10)
                assert back.lease == kv_b.lease
                await a.write(pb.AgentMessage(heartbeat=pb.Heartbeat(seq=2)))
                assert (await asyncio.wait_for(a.read(), 10)).heartbeat_ack.seq == 2
                await b.write(pb.AgentMessage(heartbeat=pb.Heartbeat(seq=1)))
                assert (await asyncio.wait_for(b.read(), 10)).heartbeat_ack.seq == 1
        assert running.gateway.refusals == {}
        assert running.lease.renewals == 2


async def test_the_lease_keeper_rerecords_live_sessions_without_a_heartbeat(
    etcd_store: EtcdStore, pki: gw.Layout
) -> None:
    await gw.register(etcd_store, *SITES)
    async with gw.running_gateway(etcd_store, pki) as running:
        creds = gw.agent_credentials(pki, "site-a")
        async with gw.raw_stream(running.address, creds) as a:
            await welcomed(a, "site-a")
            first = await record(etcd_store, "site-a")
            assert first is not None
            await etcd_store.revoke_lease(first.lease)
            back = await until(lambda: record(etcd_store, "site-a"), 10)
            assert back.lease != first.lease and back.value == first.value
            await a.write(pb.AgentMessage(heartbeat=pb.Heartbeat(seq=1)))
            assert (await asyncio.wait_for(a.read(), 10)).heartbeat_ack.seq == 1
        # the stream's end still removes the re-recorded record
        await until(lambda: _absent(etcd_store, "site-a"), 10)


async def _absent(store: EtcdStore, site: str) -> bool:
    return await record(store, site) is None
