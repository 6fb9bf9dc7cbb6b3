"""The agent gateway on real mTLS over real etcd: who may speak, and what gets written.

Every refusal case checks the two things the issue asks: a clear status, and nothing
written for the site.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from meridian.v1 import agent_pb2 as pb

from broker import errors
from broker.models import codec
from broker.models.site import SiteStatus
from broker.pki import authority
from broker.store import keys
from broker.store.etcd import EtcdStore
from broker.store.protocol import KeyValue
from tests.support import gateway as gw

pytestmark = [pytest.mark.etcd, pytest.mark.grpc]

SITES = ["site-a", "site-b", "site-c"]  # site-c has a certificate but is not registered


@pytest.fixture
def pki(tmp_path: Path) -> gw.Layout:
    return gw.make_pki(tmp_path / "pki", SITES)


@pytest.fixture
async def running(etcd_store: EtcdStore, pki: gw.Layout):  # type: ignore[no-untyped-def]
    await gw.register(etcd_store, "site-a", "site-b")
    async with gw.running_gateway(etcd_store, pki) as running:
        yield running


async def first_reply(running: gw.RunningGateway, cert_site: str | None, msg: pb.AgentMessage):  # type: ignore[no-untyped-def]
    """Send one message; return (first reply or None, final status code or None)."""
    async with gw.raw_stream(running.address, gw.agent_credentials(running.pki, cert_site)) as call:
        try:
            await call.write(msg)
            reply = await asyncio.wait_for(call.read(), 10)
        except grpc.aio.AioRpcError as exc:
            return None, exc.code(), exc.details()
        if reply is grpc.aio.EOF:
            reply = None
        code = None
        if reply is None or reply.WhichOneof("body") == "refusal":
            code = await call.code()
        return reply, code, await call.details() if code else ""


async def nothing_written(store: EtcdStore, site: str) -> None:
    assert await store.get(keys.sitestatus(site)) is None
    assert await store.get(keys.inventory(site)) is None


async def test_welcome_status_and_heartbeat(running: gw.RunningGateway) -> None:
    creds = gw.agent_credentials(running.pki, "site-a")
    async with gw.raw_stream(running.address, creds) as call:
        await call.write(gw.hello("site-a"))
        welcome = (await call.read()).welcome
        assert welcome.session_id and welcome.replica == "gw-1"
        assert (welcome.version.major, welcome.version.minor) == (1, 1)
        assert welcome.heartbeat_interval_ms == 200
        kv = await running.store.get(keys.sitestatus("site-a"))
        assert kv is not None and kv.lease != 0
        status = codec.decode(SiteStatus, kv.value)
        assert status.session_id == welcome.session_id and status.protocol == "1.1"
        usage = pb.Usage(projects={"p1": pb.ResourceAmounts(amounts={"cores": 4})})
        await call.write(pb.AgentMessage(heartbeat=pb.Heartbeat(seq=7, usage=usage)))
        ack = await asyncio.wait_for(call.read(), 5)
        assert ack.heartbeat_ack.seq == 7
        reported = await running.store.get(keys.usage("site-a"))
        assert reported is not None and json.loads(reported.value) == {"p1": {"cores": 4}}
        # a heartbeat is judged in memory: the live-session record is not rewritten
        after = await running.store.get(keys.sitestatus("site-a"))
        assert after is not None and after.mod_revision == kv.mod_revision
        inventory = json.loads((await running.store.get(keys.inventory("site-a"))).value)
        assert inventory["hosts"][0]["cells"][0]["cpus_total"] == 8
        await call.done_writing()
    # the stream's end removes the live-session record at once
    for _ in range(50):
        if await running.store.get(keys.sitestatus("site-a")) is None:
            break
        await asyncio.sleep(0.05)
    assert await running.store.get(keys.sitestatus("site-a")) is None


async def test_one_minor_behind_is_served(running: gw.RunningGateway) -> None:
    reply, code, _ = await first_reply(running, "site-a", gw.hello("site-a", 1, 1))
    assert code is None and reply.welcome.version.minor == 1
    reply, code, _ = await first_reply(running, "site-b", gw.hello("site-b", 1, 2))
    assert code is None and reply.welcome.version.minor == 2


@pytest.mark.parametrize(
    ("cert", "claims", "major", "minor", "refusal", "status", "says"),
    [
        (
            "site-a",
            "site-b",
            1,
            1,
            pb.REFUSAL_IDENTITY,
            grpc.StatusCode.PERMISSION_DENIED,
            "may speak only for itself",
        ),
        (
            "site-a",
            "site-a",
            2,
            0,
            pb.REFUSAL_UNSUPPORTED_VERSION,
            grpc.StatusCode.FAILED_PRECONDITION,
            "serves 1.1, 1.2",
        ),
        (
            "site-a",
            "site-a",
            1,
            3,
            pb.REFUSAL_UNSUPPORTED_VERSION,
            grpc.StatusCode.FAILED_PRECONDITION,
            "upgrade the brokers",
        ),
        (
            "site-a",
            "site-a",
            1,
            0,
            pb.REFUSAL_UNSUPPORTED_VERSION,
            grpc.StatusCode.FAILED_PRECONDITION,
            "upgrade the agent",
        ),
        (
            "site-c",
            "site-c",
            1,
            1,
            pb.REFUSAL_UNKNOWN_SITE,
            grpc.StatusCode.NOT_FOUND,
            "not registered",
        ),
    ],
)
async def test_refusals(
    running: gw.RunningGateway,
    cert: str,
    claims: str,
    major: int,
    minor: int,
    refusal: int,
    status: grpc.StatusCode,
    says: str,
) -> None:
    reply, code, details = await first_reply(running, cert, gw.hello(claims, major, minor))
    assert reply is not None and reply.refusal.code == refusal
    assert says in reply.refusal.reason
    assert code == status and says in details
    await nothing_written(running.store, claims)
    await nothing_written(running.store, cert)


async def test_first_message_must_be_hello(running: gw.RunningGateway) -> None:
    reply, code, _ = await first_reply(
        running, "site-a", pb.AgentMessage(heartbeat=pb.Heartbeat(seq=1))
    )
    assert reply.refusal.code == pb.REFUSAL_MALFORMED
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    await nothing_written(running.store, "site-a")


@pytest.mark.parametrize("who", ["no certificate", "foreign CA", "expired"])
async def test_tls_refuses_bad_certificates(
    running: gw.RunningGateway, tmp_path: Path, who: str
) -> None:
    if who == "no certificate":
        creds = gw.agent_credentials(running.pki, None)
    elif who == "foreign CA":
        foreign = gw.make_pki(tmp_path / "foreign", ["site-a"])
        creds = grpc.ssl_channel_credentials(
            root_certificates=running.pki.ca_cert.read_bytes(),
            private_key=foreign.site_key("site-a").read_bytes(),
            certificate_chain=foreign.site_cert("site-a").read_bytes(),
        )
    else:
        ca = authority.load(running.pki.root)
        long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
        ca.issue_site("site-a", days=1, valid_from=long_ago, replace=True)
        creds = gw.agent_credentials(running.pki, "site-a")
    async with gw.raw_stream(running.address, creds) as call:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.write(gw.hello("site-a"))
            await asyncio.wait_for(call.read(), 10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    await nothing_written(running.store, "site-a")


async def test_revocation_refuses_and_closes_live_streams(running: gw.RunningGateway) -> None:
    site_cert = x509.load_pem_x509_certificate(running.pki.site_cert("site-a").read_bytes())
    async with gw.raw_stream(running.address, gw.agent_credentials(running.pki, "site-a")) as call:
        await call.write(gw.hello("site-a"))
        assert (await call.read()).WhichOneof("body") == "welcome"
        await running.store.put(keys.revoked(site_cert.serial_number), b'{"reason":"test"}')
        with pytest.raises(grpc.aio.AioRpcError) as closed:
            while True:
                msg = await asyncio.wait_for(call.read(), 10)
                if msg is grpc.aio.EOF:
                    break
        assert closed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "revoked" in (closed.value.details() or "")
    # refused before Hello is read: the Refusal message may race the status, the status
    # always arrives
    reply, code, details = await first_reply(running, "site-a", gw.hello("site-a"))
    assert "revoked" in details
    if reply is not None:
        assert reply.refusal.code == pb.REFUSAL_IDENTITY and "revoked" in reply.refusal.reason
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # the live record of the closed stream is gone and the refused one wrote none
    assert await running.store.get(keys.sitestatus("site-a")) is None


async def test_oversized_and_garbage_close_only_that_stream(running: gw.RunningGateway) -> None:
    creds = gw.agent_credentials(running.pki, "site-a")
    big = gw.hello("site-a")
    big.hello.agent_version = "x" * (128 * 1024)
    async with gw.raw_stream(running.address, creds) as call:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.write(big)
            await asyncio.wait_for(call.read(), 10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    async with grpc.aio.secure_channel(running.address, creds) as channel:
        raw = channel.stream_stream(
            "/meridian.v1.AgentGateway/Connect",
            request_serializer=lambda b: b,
            response_deserializer=pb.BrokerMessage.FromString,
        )
        call = raw()
        with pytest.raises(grpc.aio.AioRpcError) as garbage:
            await call.write(b"\xff\xff\xff\xff not protobuf")
            await asyncio.wait_for(call.read(), 10)
        assert garbage.value.code() != grpc.StatusCode.OK
    await nothing_written(running.store, "site-a")
    reply, code, _ = await first_reply(running, "site-a", gw.hello("site-a"))
    assert code is None and reply.WhichOneof("body") == "welcome"


async def test_desired_pushed_once_per_generation_and_status_recorded(
    running: gw.RunningGateway,
) -> None:
    store = running.store
    key = keys.desired("site-a", "flavor", "small")
    await store.put(key, json.dumps({"generation": 1, "spec": {"vcpus": 2}}).encode())
    creds = gw.agent_credentials(running.pki, "site-a")
    async with gw.raw_stream(running.address, creds) as call:
        await call.write(gw.hello("site-a"))
        assert (await call.read()).WhichOneof("body") == "welcome"
        first = (await asyncio.wait_for(call.read(), 5)).desired
        assert (first.kind, first.name, first.generation) == ("flavor", "small", 1)
        assert json.loads(first.spec_json) == {"vcpus": 2}
        await store.put(key, json.dumps({"generation": 2, "spec": {"vcpus": 4}}).encode())
        second = (await asyncio.wait_for(call.read(), 5)).desired
        assert second.generation == 2
        await call.write(
            pb.AgentMessage(
                status=pb.ObjectStatus(
                    kind="flavor",
                    name="small",
                    observed_generation=2,
                    state=pb.OBJECT_STATE_READY,
                    outputs={"id": "f-1"},
                )
            )
        )
        for _ in range(100):
            kv = await store.get(keys.observed("site-a", "flavor", "small"))
            if kv is not None:
                break
            await asyncio.sleep(0.05)
        observed = json.loads(kv.value)
        assert observed["observed_generation"] == 2 and observed["state"] == "READY"
        assert observed["outputs"] == {"id": "f-1"}
    # resume: an agent that says it converged generation 2 is not sent it again
    async with gw.raw_stream(running.address, creds) as call:
        await call.write(gw.hello("site-a", flavor__small=2))
        assert (await call.read()).WhichOneof("body") == "welcome"
        await store.put(
            keys.desired("site-a", "flavor", "big"), json.dumps({"generation": 1}).encode()
        )
        nxt = (await asyncio.wait_for(call.read(), 5)).desired
        assert nxt.name == "big", "generation 2 of flavor/small was re-sent after resume"


class FlakyStore:
    """Delegates to a real store, raising StoreUnavailable while ``down`` is set."""

    def __init__(self, inner: EtcdStore) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        attr = getattr(self.inner, name)
        if name == "watch_prefix" or not callable(attr):
            return attr

        async def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            if self.down:
                raise errors.StoreUnavailable("etcd unreachable (test)")
            return await attr(*args, **kwargs)

        return call


async def test_etcd_down_refuses_with_retry_and_keeps_statuses(
    etcd_store: EtcdStore, pki: gw.Layout
) -> None:
    await gw.register(etcd_store, "site-a")
    flaky = FlakyStore(etcd_store)
    async with gw.running_gateway(flaky, pki) as running:  # type: ignore[arg-type]
        creds = gw.agent_credentials(pki, "site-a")
        async with gw.raw_stream(running.address, creds) as call:
            await call.write(gw.hello("site-a"))
            assert (await call.read()).WhichOneof("body") == "welcome"
            flaky.down = True
            reply, code, _ = await first_reply(running, "site-a", gw.hello("site-a"))
            assert reply.refusal.code == pb.REFUSAL_UNAVAILABLE
            assert reply.refusal.retry_after_ms > 0 and code == grpc.StatusCode.UNAVAILABLE
            await call.write(
                pb.AgentMessage(
                    status=pb.ObjectStatus(
                        kind="server",
                        name="vm1",
                        observed_generation=3,
                        state=pb.OBJECT_STATE_READY,
                    )
                )
            )
            await call.write(pb.AgentMessage(heartbeat=pb.Heartbeat(seq=1)))
            assert (await asyncio.wait_for(call.read(), 5)).heartbeat_ack.seq == 1
            assert await etcd_store.get(keys.observed("site-a", "server", "vm1")) is None
            flaky.down = False
            await call.write(pb.AgentMessage(heartbeat=pb.Heartbeat(seq=2)))
            assert (await asyncio.wait_for(call.read(), 5)).heartbeat_ack.seq == 2
            # written behind the stream's reader (the heartbeat woke its writer)
            kv = await observed_soon(etcd_store, "vm1")
            assert json.loads(kv.value)["observed_generation"] == 3


async def test_a_connection_that_never_handshakes_is_dropped(
    etcd_store: EtcdStore, pki: gw.Layout
) -> None:
    """A TCP connection that never starts TLS (no certificate checked yet) holds the
    replica's socket only ``gateway.handshake_timeout`` (invariant 11); a real agent
    still gets in meanwhile."""
    async with gw.running_gateway(etcd_store, pki, handshake_timeout=1.0) as running:
        host, _, port = running.address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(15):
                assert await reader.read(1024) == b""  # closed by the server, nothing said
            waited = asyncio.get_running_loop().time() - started
            assert 0.5 <= waited < 10, waited
        finally:
            writer.close()
        await gw.register(etcd_store, "site-a")
        reply, _, _ = await first_reply(running, "site-a", gw.hello("site-a"))
        assert reply is not None and reply.WhichOneof("body") == "welcome"


async def observed_soon(store: EtcdStore, name: str) -> KeyValue:
    """The observed status of server ``name`` at site-a, once it is written (10 s)."""
    for _ in range(200):
        kv = await store.get(keys.observed("site-a", "server", name))
        if kv is not None:
            return kv
        await asyncio.sleep(0.05)
    raise AssertionError(f"the status of {name} was never written")


class SlowStore(FlakyStore):
    """A loaded etcd: every transaction takes ``delay`` seconds."""

    def __init__(self, inner: EtcdStore, delay: float) -> None:
        super().__init__(inner)
        self.delay = delay

    async def txn(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        await asyncio.sleep(self.delay)
        return await self.inner.txn(*args, **kwargs)


async def test_a_burst_of_statuses_never_delays_a_heartbeat(
    etcd_store: EtcdStore, pki: gw.Layout
) -> None:
    """A site back with hundreds of objects reports them all at once; its heartbeat
    behind them is heard at once (not after one etcd transaction per status: 300 x 20 ms
    here, longer than health.down_after on a loaded machine), and every status lands."""
    await gw.register(etcd_store, "site-a")
    slow = SlowStore(etcd_store, 0.02)
    async with gw.running_gateway(slow, pki) as running:  # type: ignore[arg-type]
        creds = gw.agent_credentials(pki, "site-a")
        async with gw.raw_stream(running.address, creds) as call:
            await call.write(gw.hello("site-a"))
            assert (await call.read()).WhichOneof("body") == "welcome"
            for i in range(300):
                status = pb.ObjectStatus(
                    kind="server", name=f"vm{i}", observed_generation=1,
                    state=pb.OBJECT_STATE_READY,
                )
                await call.write(pb.AgentMessage(status=status))
            await call.write(pb.AgentMessage(heartbeat=pb.Heartbeat(seq=1)))
            started = asyncio.get_running_loop().time()
            assert (await asyncio.wait_for(call.read(), 5)).heartbeat_ack.seq == 1
            assert asyncio.get_running_loop().time() - started < 2.0
            for i in range(300):
                await observed_soon(etcd_store, f"vm{i}")
