"""Heartbeats cost etcd nothing: real etcd, a real gateway on real mTLS, real agent streams.

Liveness lives in the memory of the replica holding the stream (``gateway/liveness.py``):
in steady state no heartbeat reaches etcd (counted from etcd's own request counters), a
stream that falls silent is marked silent in its status record within the bound, and a
heartbeat after that clears the mark.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from meridian.v1 import agent_pb2 as pb

from broker.models import codec
from broker.models.site import SiteStatus
from broker.settings import HealthSettings
from broker.store import keys
from broker.store.etcd import EtcdStore
from tests.support import etcd as etcd_support
from tests.support import gateway as gw

SITES = [f"site-{i}" for i in range(20)]
HEARTBEAT = 0.05  # seconds: far faster than real agents, to make many heartbeats
KV_METHODS = ("Range", "Put", "DeleteRange", "Txn")
STARTED = re.compile(
    r'^grpc_server_started_total\{grpc_method="(\w+)",grpc_service="etcdserverpb.KV"[^}]*\} (\S+)$',
    re.M,
)


def kv_by_method(cluster: etcd_support.Cluster) -> dict[str, int]:
    """KV requests etcd has received, by method, from its own /metrics."""
    endpoint = cluster.endpoints[0].split("://")[-1]
    if cluster.tls is None:
        text = httpx.get(f"http://{endpoint}/metrics", timeout=5).text
    else:
        tls = cluster.tls
        with httpx.Client(verify=tls.ca_file, cert=(tls.client_cert, tls.client_key)) as http:
            text = http.get(f"https://{endpoint}/metrics", timeout=5).text
    found = {m: int(float(n)) for m, n in STARTED.findall(text)}
    assert found, "etcd /metrics lists no KV requests: cannot count"
    return found


def kv_requests(cluster: etcd_support.Cluster) -> int:
    """KV requests etcd has received, all kinds."""
    found = kv_by_method(cluster)
    return sum(found.get(m, 0) for m in KV_METHODS)


@pytest.fixture
def pki(tmp_path: Path) -> gw.Layout:
    return gw.make_pki(tmp_path / "pki", SITES)


async def agent(
    running: gw.RunningGateway, site: str, stop: asyncio.Event, counts: dict[str, int]
) -> None:
    """One agent stream: Hello, then a heartbeat (same usage each time) every HEARTBEAT."""
    usage = pb.Usage(projects={"p1": pb.ResourceAmounts(amounts={"cores": 2})})
    async with gw.raw_stream(running.address, gw.agent_credentials(running.pki, site)) as call:
        await call.write(gw.hello(site))
        assert (await call.read()).HasField("welcome")
        seq = 0
        while not stop.is_set():
            seq += 1
            await call.write(pb.AgentMessage(heartbeat=pb.Heartbeat(seq=seq, usage=usage)))
            msg = await asyncio.wait_for(call.read(), 10)
            while not msg.HasField("heartbeat_ack"):
                msg = await asyncio.wait_for(call.read(), 10)
            counts[site] = seq
            await asyncio.sleep(HEARTBEAT)
        await call.done_writing()


async def test_steady_heartbeats_send_no_request_to_etcd(
    etcd_store: EtcdStore, etcd_server: etcd_support.Cluster, pki: gw.Layout
) -> None:
    await gw.register(etcd_store, *SITES)
    async with gw.running_gateway(etcd_store, pki) as running:
        stop, counts = asyncio.Event(), {}  # type: ignore[var-annotated]
        agents = [asyncio.create_task(agent(running, s, stop, counts)) for s in SITES]
        try:
            # every stream open, its first heartbeat (and usage) recorded
            deadline = time.monotonic() + 30
            while len(counts) < len(SITES) or min(counts.values()) < 3:
                assert time.monotonic() < deadline, f"streams did not open: {counts}"
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            before_requests, before_beats = kv_requests(etcd_server), sum(counts.values())
            await asyncio.sleep(3.0)
            requests = kv_requests(etcd_server) - before_requests
            beats = sum(counts.values()) - before_beats
        finally:
            stop.set()
            await asyncio.gather(*agents, return_exceptions=True)
    assert beats >= 200, f"only {beats} heartbeats in the window: the test measured nothing"
    per = requests / beats
    print(f"{beats} heartbeats, {requests} etcd KV requests: {per:.4f} per heartbeat")
    assert per <= 0.01, f"{requests} etcd requests for {beats} heartbeats"
    assert running.gateway.liveness.writes == 0


async def status(store: EtcdStore, site: str) -> SiteStatus | None:
    kv = await store.get(keys.sitestatus(site))
    return None if kv is None else codec.decode(SiteStatus, kv.value)


async def until(check: Any, within: float) -> float:
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < within, "condition never became true"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_a_silent_stream_is_marked_then_cleared_by_the_replica(
    etcd_store: EtcdStore, pki: gw.Layout
) -> None:
    site = SITES[0]
    await gw.register(etcd_store, site)
    health = HealthSettings(down_after=1.0, sweep_interval=0.05)
    async with gw.running_gateway(etcd_store, pki, health=health) as running:
        async with gw.raw_stream(running.address, gw.agent_credentials(running.pki, site)) as call:
            said_hello = time.monotonic()
            await call.write(gw.hello(site))
            assert (await call.read()).HasField("welcome")
            opened = await status(etcd_store, site)
            assert opened is not None and opened.silent_since_ms == 0
            await until(lambda: _silent(etcd_store, site, True), within=10.0)
            assert time.monotonic() - said_hello >= 1.0  # not before the bound
            marked = await status(etcd_store, site)
            assert marked is not None and marked.session_id == opened.session_id
            await call.write(pb.AgentMessage(heartbeat=pb.Heartbeat(seq=5)))
            await asyncio.wait_for(call.read(), 5)
            await until(lambda: _silent(etcd_store, site, False), within=5.0)
            cleared = await status(etcd_store, site)
            assert cleared is not None and cleared.heartbeat_seq == 5
            with contextlib.suppress(Exception):
                await call.done_writing()
        await until(lambda: _gone(etcd_store, site), within=5.0)


async def _silent(store: EtcdStore, site: str, want: bool) -> bool:
    found = await status(store, site)
    return found is not None and bool(found.silent_since_ms) is want


async def _gone(store: EtcdStore, site: str) -> bool:
    return await status(store, site) is None


async def test_an_opening_reads_nothing_from_etcd_once_the_replica_follows_the_sites(
    etcd_store: EtcdStore, etcd_server: etcd_support.Cluster, pki: gw.Layout
) -> None:
    """A cold herd's openings: the registration and the (empty) desired snapshot come
    from what the replica follows; only the opening record is written."""
    await gw.register(etcd_store, *SITES)
    async with gw.running_gateway(etcd_store, pki) as running:
        sites, desired = running.gateway.sites, running.gateway.desired
        assert sites is not None and desired is not None

        async def listed() -> bool:
            return sites.listed and desired.listed

        await until(listed, 10)
        before = kv_by_method(etcd_server)
        for site in SITES:
            creds = gw.agent_credentials(pki, site)
            async with gw.raw_stream(running.address, creds) as call:
                await call.write(gw.hello(site))
                assert (await asyncio.wait_for(call.read(), 10)).HasField("welcome")
        after = kv_by_method(etcd_server)
    delta = {m: after.get(m, 0) - before.get(m, 0) for m in KV_METHODS}
    print(f"{len(SITES)} openings: etcd requests {delta}")
    assert delta["Range"] == 0, delta
    assert 1 <= delta["Txn"] <= 2 * len(SITES), delta  # opening records, and closings
