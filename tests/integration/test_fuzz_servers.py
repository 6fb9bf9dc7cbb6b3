"""Fuzzing the real servers over real mTLS: the gateway's agent stream and the image relay.

A registered site opens a stream (valid Hello, Welcome) and sends one random
``AgentMessage``, then a heartbeat; the relay gets random ``PullRequest``s and ``Upload``
chunks (``ImageReport``s are fuzzed through ``ImageOrders`` in the unit tier). Every
call must end in a status the servicer chose (never UNKNOWN: an exception escaped a
handler), the gateway must answer the next stream, and no asyncio task may outlive its
call. Bounded by ``protofuzz.EXAMPLES``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from meridian.v1 import agent_pb2 as pb
from meridian.v1 import image_pb2 as ipb
from meridian.v1 import image_pb2_grpc as ipb_grpc

from broker.store.memory import MemoryStore
from tests.support import gateway as gw
from tests.support import imagerelay, protofuzz

pytestmark = [pytest.mark.grpc]

FUZZ = settings(
    max_examples=max(10, protofuzz.EXAMPLES // 2),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CRASH = {grpc.StatusCode.UNKNOWN}


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[gw.RunningGateway]:
    store = MemoryStore()
    pki = gw.make_pki(tmp_path / "pki", ["site-a"])
    await gw.register(store, "site-a")
    async with gw.running_gateway(store, pki, max_message_bytes=1 << 20) as running:
        yield running
    await store.close()


def ours(task: asyncio.Task[object]) -> bool:
    """Not grpc's own server machinery (it keeps a task waiting for the next call)."""
    return "grpc._cython" not in repr(task) and "AioServer" not in repr(task)


async def settled(baseline: set[asyncio.Task[object]]) -> set[asyncio.Task[object]]:
    """Our tasks beyond ``baseline`` still there once the calls have had time to end."""
    extra: set[asyncio.Task[object]] = set()
    for _ in range(100):
        extra = {t for t in asyncio.all_tasks() - baseline if not t.done() and ours(t)}
        if not extra:
            break
        await asyncio.sleep(0.02)
    return extra


@FUZZ
@given(msg=protofuzz.messages(pb.AgentMessage))
async def test_the_gateway_survives_any_agent_message(
    running: gw.RunningGateway, msg: pb.AgentMessage
) -> None:
    baseline = asyncio.all_tasks()
    code = grpc.StatusCode.OK
    async with gw.raw_stream(running.address, gw.agent_credentials(running.pki, "site-a")) as call:
        try:
            await call.write(gw.hello("site-a"))
            assert (await asyncio.wait_for(call.read(), 10)).WhichOneof("body") == "welcome"
            await call.write(msg)
            await call.write(pb.AgentMessage(heartbeat=pb.Heartbeat(seq=10**6)))
            await call.done_writing()
            while (await asyncio.wait_for(call.read(), 10)) is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        except asyncio.InvalidStateError:
            code = await call.code()  # the stream ended under a write
    assert code not in CRASH, (code, msg)
    left = await settled(baseline)
    assert not left, [t.get_coro() for t in left]
    assert running.registry.get("site-a") is None


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[imagerelay.Federation]:
    async with imagerelay.federation(tmp_path, ["src", "dst"]) as fed:
        await fed.start_site("src")
        await fed.start_site("dst")
        yield fed


@FUZZ
@given(
    pull=protofuzz.messages(ipb.PullRequest),
    chunk=protofuzz.messages(ipb.ImageChunk),
)
async def test_the_relay_survives_any_request(
    relay: imagerelay.Federation,
    pull: ipb.PullRequest,
    chunk: ipb.ImageChunk,
) -> None:
    baseline = asyncio.all_tasks()
    stub = ipb_grpc.ImageTransferStub(relay.sites["dst"].channel)
    codes: list[grpc.StatusCode] = []
    try:
        async for _ in stub.Pull(pull, timeout=10):
            pass
    except grpc.aio.AioRpcError as exc:
        codes.append(exc.code())

    async def one(m: ipb.ImageChunk) -> AsyncIterator[ipb.ImageChunk]:
        yield m

    try:
        await stub.Upload(one(chunk), timeout=10)
    except grpc.aio.AioRpcError as exc:
        codes.append(exc.code())
    assert not CRASH & set(codes), (codes, pull, chunk)
    assert relay.relay.serving() == {"src", "dst"}, "the standing Serve calls are untouched"
    left = await settled(baseline)
    assert not left, [t.get_coro() for t in left]
