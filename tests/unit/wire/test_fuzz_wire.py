"""Fuzzing the wire: every message type of ``proto/meridian/v1/*.proto``, as bytes and as
random field values, through what the gateway and the agent decode it with.

Goal: 0 crashes — a decoder either parses or raises ``DecodeError``; a handler either
takes a message or refuses it with its package's own error — and 0 leaked asyncio tasks.
Bounded for the normal suite (``protofuzz.EXAMPLES`` per property, well under a minute in
all); ``MERIDIAN_FUZZ_EXAMPLES=5000`` makes a long run. The real servers over mTLS are
fuzzed in ``tests/integration/test_fuzz_servers.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from google.protobuf import message as pbmessage
from hypothesis import HealthCheck, given, settings
from meridian.v1 import agent_pb2 as pb
from meridian.v1 import image_pb2 as ipb

from broker import errors as broker_errors
from broker.controllers import quotasync
from broker.gateway import convert, version
from broker.gateway.imageaccess import CatalogAccess
from broker.gateway.imagefeed import ImageOrders
from broker.models import codec
from broker.store.memory import MemoryStore
from replication import access
from replication import errors as replication_errors
from siteagent import errors as agent_errors
from siteagent import imagewire, wire
from siteagent.drivers import specs
from tests.support import protofuzz

FUZZ = settings(
    max_examples=protofuzz.EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
REFUSALS = (
    broker_errors.BrokerError,
    agent_errors.SiteAgentError,
    replication_errors.ReplicationError,
)


def run_checked(body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` on a fresh loop; fail if it leaves a task behind."""

    async def checked() -> None:
        before = asyncio.all_tasks()
        await body()
        await asyncio.sleep(0)
        leaked = asyncio.all_tasks() - before
        assert not leaked, f"leaked tasks: {leaked}"

    asyncio.run(checked())


@pytest.mark.parametrize("cls", protofuzz.all_messages(), ids=lambda c: c.__name__)
def test_every_message_decodes_or_is_refused(cls: type[pbmessage.Message]) -> None:
    @FUZZ
    @given(protofuzz.raw_bytes(cls))
    def decode(data: bytes) -> None:
        try:
            msg = cls.FromString(data)
        except pbmessage.DecodeError:
            return
        assert cls.FromString(msg.SerializeToString()) == msg

    decode()


def gateway_takes(msg: pb.AgentMessage) -> None:
    """What the gateway does with each body of an agent's message (servicer._read)."""
    body = msg.WhichOneof("body")
    if body == "hello":
        v = msg.hello.version
        version.negotiate(version.Version(v.major, v.minor))
        codec.encode(convert.inventory_from_wire("site-a", msg.hello.inventory))
    elif body == "heartbeat" and msg.heartbeat.HasField("usage"):
        stored = json.dumps(convert.usage_from_wire(msg.heartbeat.usage)).encode()
        quotasync._usage(stored)  # the leader reads it back
    elif body == "status":
        convert.status_from_wire(msg.status, 0).encode()
    elif body == "inventory":
        codec.encode(convert.inventory_from_wire("site-a", msg.inventory))


@FUZZ
@given(protofuzz.messages(pb.AgentMessage))
def test_the_gateway_takes_or_refuses_any_agent_message(msg: pb.AgentMessage) -> None:
    try:
        gateway_takes(pb.AgentMessage.FromString(msg.SerializeToString()))
    except REFUSALS:
        pass


@FUZZ
@given(protofuzz.messages(ipb.ImageReport))
def test_the_relay_writes_any_image_report_without_crashing(msg: ipb.ImageReport) -> None:
    async def body() -> None:
        store = MemoryStore()
        try:
            await ImageOrders(store).report("site-a", msg)
        except REFUSALS:
            pass
        finally:
            await store.close()

    run_checked(body)


@FUZZ
@given(protofuzz.messages(ipb.PullRequest))
def test_the_relay_authorizes_any_pull_request(msg: ipb.PullRequest) -> None:
    async def body() -> None:
        store = MemoryStore()
        try:
            access.bounded_chunk(msg.chunk_size, 1 << 20)
            refused = await CatalogAccess(store).refusal("site-a", msg.image_id, msg.source_site)
            assert refused is not None, "nothing is ordered: every pull is refused"
        finally:
            await store.close()

    run_checked(body)


def agent_takes(msg: Any) -> None:
    """What the agent does with what the broker sends (session, imagewire)."""
    if isinstance(msg, pb.BrokerMessage) and msg.WhichOneof("body") == "desired":
        obj = wire.desired_from_wire(msg.desired)
        specs.parse(obj.kind, obj.name, obj.spec)
    elif isinstance(msg, ipb.CopyOrder):
        imagewire.image_of(msg)
    elif isinstance(msg, ipb.ServeRequest):
        access.bounded_chunk(msg.chunk_size, 1 << 20)


@pytest.mark.parametrize(
    "cls", [pb.BrokerMessage, ipb.CopyOrder, ipb.ServeRequest], ids=lambda c: c.__name__
)
def test_the_agent_takes_or_refuses_any_broker_message(cls: type[pbmessage.Message]) -> None:
    @FUZZ
    @given(protofuzz.messages(cls))
    def take(msg: pbmessage.Message) -> None:
        try:
            agent_takes(cls.FromString(msg.SerializeToString()))
        except REFUSALS:
            pass

    take()


def test_a_desired_spec_of_any_shape_is_refused_cleanly() -> None:
    """Valid JSON of the wrong shape, for every kind the agent knows."""
    for kind in ("server", "port", "network", "flavor", "quota", "nope"):
        for spec in (b"[]", b'{"name": 5}', b'{"a": {"b": []}}', b"1e999", b'"x"'):
            msg = pb.DesiredObject(kind=kind, name="n", generation=1, spec_json=spec)
            try:
                agent_takes(pb.BrokerMessage(desired=msg))
            except REFUSALS:
                pass
