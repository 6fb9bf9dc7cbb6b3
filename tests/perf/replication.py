"""Benchmark: image replication through the broker relay against a raw mTLS stream.

    python -m tests.perf.replication [--size-mib 1024] [--fanout-mib 32] [--chunk-kib 1024]

Three processes on loopback, all with certificates from one throwaway CA:

- **broker**: the ``ImageTransfer`` relay alone (``broker.gateway.relay``), reporting its
  peak RSS (``ru_maxrss``) at the end;
- **src**: site agent ``src`` serving a generated image (a repeating random pattern, so
  1 GiB costs no memory) through ``siteagent.imagewire.ImageServer``;
- **dst**: site agent ``dst`` (pulls with per-chunk and whole-image sha256, into a sink
  that keeps only digests and checks as the agent's stores do, ``fold.Received``: a direct
  pull's prefix digests in the one pass that computes the whole-image sha256), plus 16
  fan-out sites holding real bytes in memory, plus a bare mTLS gRPC server that just
  receives ``ImageChunk`` messages (the raw stream).

Figures: (1) ``--size-mib`` from src to dst through the relay vs the raw stream of the
same chunks from src straight to dst's bare server (the limit; ratio target >= 0.8), and
the same image pulled by dst **directly** from src's ``directwire.DirectServer``
(``direct_vs_raw``, target >= 0.8; the relay's bytes carried during it, per destination,
``broker_bytes_per_dest``, target ~0) as the broker orders it: src's agent names its
direct address in an audit on its ``Replicate`` call, the catalog records are written to
the broker's store (an in-memory ``Store``, in place of etcd and the leader's
replication controller), and the broker's ``ImageOrders`` -- its grant key loaded as
``images.grant_key_file`` names it (``grant_signer``) -- sends dst a copy order with
src's address and a grant it signs; dst copies what the order names (``image_of``,
``DirectSource``), dialing src by its serving certificate's name, as its agent does. The
CPU both ends spent on that transfer gives a cost per MiB (``cpu_s_per_mib``), and from
it the link cap (``link_cap_mib_s``, ``choose_cap``: the swarm's 16 sites use at most
half a core, by CPU cost and by the rate the machine gave the direct transfer in this
run, whichever is lower; ``--link-cap-mib-s`` overrides): from then on every site's link
is shaped to it, each way. (1b) the ``--fanout-mib`` image pulled directly over src's
shaped link (the rate achieved, ``shaped_direct_mib_s``: the shaping holds); (2) that
image fanned out to 16 sites through the broker relay, relay rounds, every site link
shaped, vs one transfer of it through the relay over one shaped link
(``relay16_over_one``; the broker's own link is not shaped); (2b) the same image
**swarmed** by 16 sites (a fourth process, ``tests.perf.imageswarm``: each site its own
direct mTLS server and its own shaped link) vs one site pulling it alone over one shaped
link with the same code (``swarm16_over_one``, target <= 2x; the relay's bytes during
the swarm count in ``broker_bytes_per_dest``; each site swarms from the peers and grants
of the copy order the broker's ``ImageOrders`` and tracker give it, run in the swarm
process on an in-memory store); (3) the broker's peak RSS across all (must stay
bounded).
Prints a table; the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from meridian.v1 import image_pb2 as ipb
from meridian.v1 import image_pb2_grpc as ipb_grpc

from broker.gateway import server as gateway_server
from broker.gateway.imagefeed import ImageOrders, grant_signer
from broker.gateway.relay import Relay
from broker.pki.layout import Layout
from broker.settings import BrokerSettings, GatewaySettings, TlsSettings
from broker.store import keys
from broker.store.memory import MemoryStore
from replication import catalog, fanout, transfer
from replication.catalog import ImageId, SiteId
from replication.fold import Received
from replication.store import MemoryBytes
from replication import grant
from siteagent import directwire
from siteagent.imagewire import DirectSource, ImageServer, PullSource, image_of
from replication.throttle import Throttle, Throttled
from tests.perf import imageswarm
from tests.support.etcd import free_ports
from tests.support.gateway import TRUST_DOMAIN, agent_credentials, make_pki, site_server_credentials

OPTIONS = [
    ("grpc.max_receive_message_length", 8 << 20),
    ("grpc.max_send_message_length", 8 << 20),
]
FANOUT = [f"f{i:02d}" for i in range(16)]
BIG, SMALL = ImageId("big"), ImageId("small")


def pattern(chunk: int) -> bytes:
    return random.Random(7).randbytes(chunk)


def pattern_chunk(block: bytes, offset: int, size: int, total: int) -> bytes:
    n = min(size, total - offset)
    k = (offset // len(block)) % 251  # vary chunks so a skipped one changes the digest
    return bytes([k]) + block[1:n] if n else b""


def pattern_sha256(block: bytes, total: int) -> str:
    h = hashlib.sha256()
    for at in range(0, total, len(block)):
        h.update(pattern_chunk(block, at, len(block), total))
    return h.hexdigest()


class PatternSource:
    """Serves ``big`` as a generated pattern and anything else from memory."""

    async def holds(self, image: ImageId) -> bool:
        return image == BIG or self.mem.has(image)

    def __init__(self, block: bytes, total: int, small: bytes) -> None:
        self.block, self.total = block, total
        self.mem = MemoryBytes()
        self.mem.put(SMALL, small)

    async def chunks(
        self, image: ImageId, offset: int, chunk_size: int, *, digests: bool = True
    ) -> AsyncIterator[transfer.Chunk]:
        if image != BIG:
            async for c in self.mem.chunks(image, offset, chunk_size, digests=digests):
                yield c
            return
        for at in range(offset, self.total, len(self.block)):
            data = pattern_chunk(self.block, at, len(self.block), self.total)
            # as the agent's stores read and hash (not when the caller takes prefix digests)
            yield await transfer.hashed(at, data) if digests else transfer.Chunk(at, data, b"")


class DigestSink:
    """Checks and hashes what arrives as the agent's stores do (``fold.Received``: a
    direct source's prefix digests checked in the one pass that computes the whole-image
    sha256); keeps no bytes."""

    def __init__(self) -> None:
        self.received = Received()

    async def verified_offset(self, image: ImageId) -> int:
        return self.received.size

    async def reserve(self, image: ImageId, size: int) -> None:
        return None

    async def write(self, image: ImageId, chunk: transfer.Chunk) -> None:
        await self.received.absorb(chunk)

    async def digests(self, image: ImageId, algo: str) -> tuple[str, str]:
        return await self.received.hexdigests(algo)

    async def commit(self, image: ImageId) -> None:
        return None

    async def discard(self, image: ImageId) -> None:
        return None


class RawSink(ipb_grpc.ImageTransferServicer):
    def __init__(self) -> None:
        self.received = 0

    async def Upload(
        self, request_iterator: AsyncIterator[ipb.ImageChunk], context: Any
    ) -> ipb.UploadDone:
        async for c in request_iterator:
            self.received += len(c.data)
        return ipb.UploadDone()


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def lines() -> AsyncIterator[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        yield json.loads(line)


def settings(pki: Layout, port: int) -> BrokerSettings:
    return BrokerSettings(
        name="gw-1",
        tls=TlsSettings(
            ca_file=str(pki.ca_cert),
            cert_file=str(pki.broker_cert("gw-1")),
            key_file=str(pki.broker_key("gw-1")),
            trust_domain=TRUST_DOMAIN,
        ),
        gateway=GatewaySettings(listen=f"127.0.0.1:{port}", max_message_bytes=8 << 20),
    )


class Ordered:
    """Every pull is ordered: the benchmark measures the bytes path, not the authorization
    (one read-only etcd transaction per pull, see ``broker.gateway.imageaccess``)."""

    async def refusal(self, caller: str, image: str, source: str) -> str | None:
        return None


async def order(store: MemoryStore, orders: ImageOrders, cmd: dict[str, Any]) -> None:
    """What the leader's replication controller writes for one copy: the catalog record,
    the source's verified replica and the destination's attempt from it -- once the source's
    audit named ``address`` as where it serves directly (the gateway then orders the copy
    with that address and a grant it signs, ``ImageOrders._path``)."""
    img, source, destination = catalog.Image.from_dict(cmd["image"]), cmd["source"], cmd["dst"]
    for _ in range(1000):
        if orders._direct.get(source) == cmd["address"]:
            break
        await asyncio.sleep(0.01)
    else:
        raise RuntimeError(f"{source} never reported {cmd['address']}")
    held = catalog.Replica(img.id, SiteId(source), catalog.State.ACTIVE, sha256=img.sha256)
    kv = await store.get(keys.image_replica(img.id, destination))
    attempts = catalog.decode_replica(kv.value).attempts + 1 if kv is not None else 1
    copy = catalog.Replica(
        img.id, SiteId(destination), catalog.State.TRANSFERRING, source=source, attempts=attempts
    )
    await store.put(keys.image(img.id), catalog.Entry(img).encode())
    await store.put(keys.image_replica(img.id, source), catalog.encode_replica(held))
    await store.put(keys.image_replica(img.id, destination), catalog.encode_replica(copy))


async def role_broker(pki: Layout, port: int, chunk: int) -> None:
    store = MemoryStore()  # etcd's stand-in: what the leader would have written
    # the broker's copy orders and grants, with its key as images.grant_key_file names it
    orders = ImageOrders(store, signer=grant_signer(str(pki.root / "grant.key")), chunk_size=chunk)
    follower = asyncio.create_task(orders.run())
    relay = Relay(TRUST_DOMAIN, access=Ordered(), orders=orders)
    server = gateway_server.build(settings(pki, port), None, relay)
    await server.start()
    emit(event="ready")
    async for cmd in lines():
        if cmd["op"] == "rss":
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            emit(
                event="rss",
                peak_mib=rss / 1024,
                buffered=relay.peak_buffered,
                carried=relay.carried_bytes,
            )
        elif cmd["op"] == "order":
            await order(store, orders, cmd)
            emit(event="ordered")
    follower.cancel()
    await server.stop(0.2)


def link() -> Throttle:
    """One direction of a site's link: unshaped until a ``cap`` command sets its rate."""
    return Throttle(float("inf"), burst=1 << 20)


async def direct_servers(
    pki: Layout, source: PatternSource, ports: list[int], up: Throttle
) -> list[grpc.aio.Server]:
    """src's direct image servers: unshaped on ``--port``, through src's link ``up`` on
    ``--port`` + 1."""
    key = grant.load_public((pki.root / "grant.pub").read_bytes())
    creds = site_server_credentials(pki, "src")
    out = []
    for port, throttle in ((ports[0], None), (ports[1], up)):
        service = directwire.DirectServer("src", source, key, throttle=throttle, max_pieces=2)
        srv, _ = directwire.server(service, f"127.0.0.1:{port}", creds)
        await srv.start()
        out.append(srv)
    return out


class Replicating:
    """A site's standing ``Replicate`` call on the broker (``imagewire.ImageAgent``'s): the
    reports put in ``outbox`` go up, the copy orders the broker sends come down to
    ``orders``."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.outbox: asyncio.Queue[ipb.ImageReport] = asyncio.Queue()
        self.orders: asyncio.Queue[ipb.CopyOrder] = asyncio.Queue()
        self.call = ipb_grpc.ImageTransferStub(channel).Replicate(self._reports())
        self.task = asyncio.create_task(self._read())

    async def _reports(self) -> AsyncIterator[ipb.ImageReport]:
        while True:
            yield await self.outbox.get()

    async def _read(self) -> None:
        async for o in self.call:
            self.orders.put_nowait(o)

    async def order(self, image: ImageId) -> ipb.CopyOrder:
        """The next copy order for ``image``."""
        while (o := await asyncio.wait_for(self.orders.get(), 30)).image_id != image:
            continue
        return o

    async def close(self) -> None:
        self.call.cancel()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def role_src(
    pki: Layout, broker: str, size: int, chunk: int, small: bytes, ports: list[int]
) -> None:
    channel = grpc.aio.secure_channel(broker, agent_credentials(pki, "src"), options=OPTIONS)
    source = PatternSource(pattern(chunk), size, small)
    up = link()  # src's uplink: shaped once the benchmark chose the cap
    server = ImageServer(channel, source, throttle=up)
    task = asyncio.create_task(server.run())
    await server.ready.wait()
    direct = await direct_servers(pki, source, ports, up)
    audits = Replicating(channel)  # where src serves directly, as its agent's audits say
    audits.outbox.put_nowait(ipb.ImageReport(audit=True, direct_address=f"127.0.0.1:{ports[0]}"))
    emit(event="ready")
    async for cmd in lines():
        if cmd["op"] == "cap":  # from now on src serves through its shaped link
            up.rate = float(cmd["cap"])
            address = f"127.0.0.1:{ports[1]}"
            audits.outbox.put_nowait(ipb.ImageReport(audit=True, direct_address=address))
            emit(event="cap")
        elif cmd["op"] == "raw":
            async with grpc.aio.secure_channel(
                cmd["address"],
                grpc.ssl_channel_credentials(
                    pki.ca_cert.read_bytes(),
                    pki.site_key("src").read_bytes(),
                    pki.site_cert("src").read_bytes(),
                ),
                options=OPTIONS,
            ) as raw:

                async def msgs() -> AsyncIterator[ipb.ImageChunk]:
                    # read ahead as the agent's servers do (transfer.prefetch)
                    async for c in transfer.prefetch(source.chunks(BIG, 0, chunk)):
                        yield ipb.ImageChunk(offset=c.offset, data=c.data, sha256=c.sha256)

                t = time.perf_counter()
                await ipb_grpc.ImageTransferStub(raw).Upload(msgs())
                emit(event="raw", seconds=time.perf_counter() - t)
    task.cancel()
    await audits.close()
    for srv in direct:
        await srv.stop(None)


async def role_dst(pki: Layout, broker: str, raw_port: int, chunk: int) -> None:
    raw = grpc.aio.server(options=OPTIONS)
    sink = RawSink()
    ipb_grpc.add_ImageTransferServicer_to_server(sink, raw)
    raw.add_secure_port(f"127.0.0.1:{raw_port}", gateway_server.credentials(settings(pki, 0)))
    await raw.start()
    chans = {
        s: grpc.aio.secure_channel(broker, agent_credentials(pki, s), options=OPTIONS)
        for s in ["dst", "one", *FANOUT]
    }
    stores = {s: MemoryBytes() for s in ["one", *FANOUT]}
    ups, downs = {s: link() for s in FANOUT}, {s: link() for s in ["one", *FANOUT]}
    servers = [ImageServer(chans[s], stores[s], throttle=ups[s]) for s in FANOUT]
    tasks = [asyncio.create_task(s.run()) for s in servers]
    for s in servers:
        await s.ready.wait()
    ordered = Replicating(chans["dst"])  # dst's copy orders, from the broker
    emit(event="ready")
    async for cmd in lines():
        if cmd["op"] == "cap":  # every fan-out site's link, both ways
            for bucket in (*ups.values(), *downs.values()):
                bucket.rate = float(cmd["cap"])
            emit(event="cap")
            continue
        img = catalog.Image.from_dict(cmd["image"])
        t = time.perf_counter()
        if cmd["op"] == "pull":
            await transfer.copy(
                img, PullSource(chans["dst"], "src"), DigestSink(), chunk_size=chunk
            )
            emit(event="pull", seconds=time.perf_counter() - t)
        elif cmd["op"] == "direct":  # as the agent copies what the broker ordered
            o = await ordered.order(img.id)
            t = time.perf_counter()
            creds = agent_credentials(pki, "dst")
            name = ("grpc.ssl_target_name_override", grant.server_name(o.source_site))
            async with grpc.aio.secure_channel(o.source_address, creds, [*OPTIONS, name]) as ch:
                source = DirectSource(ch, o.source_site, o.grant)
                await transfer.copy(image_of(o), source, DigestSink(), chunk_size=o.chunk_size)
            emit(event="direct", seconds=time.perf_counter() - t)
        elif cmd["op"] == "one":
            one = Throttled(PullSource(chans["one"], "src"), downs["one"])
            await transfer.copy(img, one, stores["one"], chunk_size=chunk)
            emit(event="one", seconds=time.perf_counter() - t)
        elif cmd["op"] == "fanout":

            async def hop(h: Any, progress: Any, img: catalog.Image = img) -> None:
                await transfer.copy(
                    img,
                    Throttled(PullSource(chans[h.destination], h.source), downs[h.destination]),
                    stores[h.destination],
                    chunk_size=chunk,
                    progress=progress,
                )

            res = await fanout.run(img.id, [SiteId("src")], [SiteId(s) for s in FANOUT], hop)
            seconds = time.perf_counter() - t
            # every destination must hold the image, byte for byte: a hop that failed (or
            # wrote wrong bytes) makes the fan-out time a time of less work
            wrong = {
                s: "missing" if not stores[s].has(img.id) else "sha256 differs"
                for s in FANOUT
                if not stores[s].has(img.id)
                or hashlib.sha256(stores[s].get(img.id)).hexdigest() != img.sha256
            }
            emit(
                event="fanout",
                seconds=seconds,
                rounds=res.rounds,
                failed={**wrong, **res.failed()},
            )
        elif cmd["op"] == "rawcount":
            emit(event="rawcount", received=sink.received)
    await ordered.close()
    for task in tasks:
        task.cancel()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def choose_cap(cpu_per_mib: float, direct_mib_s: float) -> tuple[float, float, float]:
    """The link cap (MiB/s) at which the swarm leaves the CPU idle half the time, and the
    two limits it is the lower of. The swarm's 16 sites share one process, each receiving
    at the cap and serving about as much, so it does both ends' work of 16 caps: (1) by
    CPU cost, each MiB costs what the direct transfer cost both ends (TLS, sha256,
    copies): half a core is 0.5 / (16 x cost); (2) by what the machine gave in this run
    (others share it): the direct transfer's two processes moved ``direct_mib_s``, one
    process doing both ends about half that: half of it is direct / 2 / 2 / 16. Rounded
    down to 0.25 MiB/s, within 1..25 MiB/s."""
    by_cpu = 0.5 / (len(imageswarm.SITES) * max(cpu_per_mib, 1e-6))
    by_wall = direct_mib_s / 4 / len(imageswarm.SITES)
    cap = max(1.0, min(25.0, int(min(by_cpu, by_wall) * 4) / 4))
    return cap, by_cpu, by_wall


class Proc:
    def __init__(self, args: list[str]) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-m", "tests.perf.replication", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, **cmd: Any) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()

    def read(self, event: str) -> dict[str, Any]:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            msg: dict[str, Any] = json.loads(line)
            if msg.get("event") == event:
                return msg
        raise RuntimeError(f"process ended before {event!r}")

    def close(self) -> None:
        if self.p.stdin:
            self.p.stdin.close()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--fanout-mib", type=int, default=64)
    ap.add_argument("--chunk-kib", type=int, default=1024)
    # 0: computed from the CPU cost per MiB measured in the run (``choose_cap``)
    ap.add_argument("--link-cap-mib-s", type=float, default=0.0)
    ap.add_argument("--piece-kib", type=int, default=1024)
    ap.add_argument("--src-address", default="")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 64 MiB, 8 MiB fan-out")
    ap.add_argument("--direct-ports", default="")
    ap.add_argument("--role", choices=["broker", "src", "dst", "swarm"])
    ap.add_argument("--pki")
    ap.add_argument("--broker")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    if a.quick:
        a.size_mib, a.fanout_mib = min(a.size_mib, 64), min(a.fanout_mib, 8)
    size, chunk = a.size_mib << 20, a.chunk_kib << 10
    small = random.Random(11).randbytes(a.fanout_mib << 20)
    if a.role == "broker":
        asyncio.run(role_broker(Layout(Path(a.pki)), a.port, chunk))
        return
    if a.role == "src":
        ports = [int(p) for p in a.direct_ports.split(",")]
        asyncio.run(role_src(Layout(Path(a.pki)), a.broker, size, chunk, small, ports))
        return
    if a.role == "dst":
        asyncio.run(role_dst(Layout(Path(a.pki)), a.broker, a.port, chunk))
        return
    if a.role == "swarm":
        piece = a.piece_kib << 10
        asyncio.run(imageswarm.role_swarm(Layout(Path(a.pki)), a.src_address, small, piece))
        return
    orchestrate(a, size, chunk, small)


def orchestrate(a: argparse.Namespace, size: int, chunk: int, small: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sites = ["src", "dst", "one", *FANOUT, *imageswarm.SITES]
        make_pki(Path(tmp), sites, serving=["src", *imageswarm.SITES])
        key = grant.Ed25519PrivateKey.generate()  # the broker's grant key
        (Path(tmp) / "grant.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (Path(tmp) / "grant.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        bport, rport, dport, sport = free_ports(4)
        broker = f"127.0.0.1:{bport}"
        direct_at, shaped_at = f"127.0.0.1:{dport}", f"127.0.0.1:{sport}"
        common = [
            "--pki",
            tmp,
            "--broker",
            broker,
            "--size-mib",
            str(a.size_mib),
            "--fanout-mib",
            str(a.fanout_mib),
            "--chunk-kib",
            str(a.chunk_kib),
            "--link-cap-mib-s",
            str(a.link_cap_mib_s),
            "--piece-kib",
            str(a.piece_kib),
        ]
        b = Proc(["--role", "broker", "--port", str(bport), *common])
        b.read("ready")
        s = Proc(["--role", "src", "--direct-ports", f"{dport},{sport}", *common])
        s.read("ready")
        d = Proc(["--role", "dst", "--port", str(rport), *common])
        d.read("ready")
        w = Proc(["--role", "swarm", "--src-address", shaped_at, *common])
        w.read("ready")
        try:
            big = catalog.Image(
                id=BIG,
                name="big",
                size=size,
                source_site=SiteId("src"),
                sha256=pattern_sha256(pattern(chunk), size),
                os_hash_value="",
            )
            sml = catalog.Image(
                id=SMALL,
                name="small",
                size=len(small),
                source_site=SiteId("src"),
                sha256=hashlib.sha256(small).hexdigest(),
            )
            s.send(op="raw", address=f"127.0.0.1:{rport}")
            raw_s = s.read("raw")["seconds"]
            d.send(op="rawcount", image=big.to_dict())
            raw_bytes = d.read("rawcount")["received"]
            d.send(op="pull", image=big.to_dict())
            relay_s = d.read("pull")["seconds"]
            b.send(op="rss")
            rss_single = b.read("rss")
            # the broker orders the copy: src's address and a grant it signs
            b.send(op="order", image=big.to_dict(), source="src", dst="dst", address=direct_at)
            b.read("ordered")
            d.send(op="direct", image=big.to_dict())
            cpu = cpu_seconds(s.p.pid) + cpu_seconds(d.p.pid)
            direct_s = d.read("direct")["seconds"]
            cpu = cpu_seconds(s.p.pid) + cpu_seconds(d.p.pid) - cpu
            cpu_per_mib = cpu / a.size_mib
            cap_mib, by_cpu, by_wall = choose_cap(cpu_per_mib, a.size_mib / direct_s)
            cap_mib = a.link_cap_mib_s or cap_mib
            cap = cap_mib * (1 << 20)
            for p in (s, d):
                p.send(op="cap", cap=cap)
                p.read("cap")
            b.send(op="rss")
            carried_direct = b.read("rss")["carried"] - rss_single["carried"]
            b.send(op="order", image=sml.to_dict(), source="src", dst="dst", address=shaped_at)
            b.read("ordered")
            d.send(op="direct", image=sml.to_dict())
            shaped_s = d.read("direct")["seconds"]
            d.send(op="one", image=sml.to_dict())
            one_s = d.read("one")["seconds"]
            d.send(op="fanout", image=sml.to_dict())
            fan = d.read("fanout")
            w.send(op="one", image=sml.to_dict(), cap=cap)
            swarm_one = w.read("one")
            b.send(op="rss")
            carried = b.read("rss")["carried"]
            w.send(op="swarm", image=sml.to_dict(), cap=cap)
            swarm16 = w.read("swarm")
            b.send(op="rss")
            rss_all = b.read("rss")
            carried_swarm = rss_all["carried"] - carried
        finally:
            for p in (w, d, s, b):
                p.close()
    mib = size / (1 << 20)
    problems = []
    if raw_bytes != size:
        problems.append(f"the raw stream delivered {raw_bytes} of {size} bytes")
    if fan["failed"]:
        problems.append(f"fan-out hops failed: {fan['failed']}")
    for run in (swarm_one, swarm16):
        if run["failed"]:
            problems.append(f"swarm destinations failed: {run['failed']}")
    swarm_ok = not swarm_one["failed"] and not swarm16["failed"]
    if carried_direct or carried_swarm:
        problems.append(
            f"the broker relayed {carried_direct} bytes of a direct transfer and "
            f"{carried_swarm} of a swarm"
        )
    # the cap lets one 1 MiB burst through at once: allow it on top of the rate
    shaped_limit = cap_mib * (1 + 1 / max(a.fanout_mib - 1, 1)) * 1.05
    if a.fanout_mib / shaped_s > shaped_limit:
        problems.append(f"the shaped link ran at {a.fanout_mib / shaped_s:.1f} MiB/s")
    fan_ok = not fan["failed"]
    out = {
        "size_mib": a.size_mib,
        "chunk_kib": a.chunk_kib,
        "raw_bytes": raw_bytes,
        "raw_s": raw_s,
        "raw_mib_s": mib / raw_s,
        "relay_s": relay_s,
        "relay_mib_s": mib / relay_s,
        "ratio": raw_s / relay_s,
        "direct_s": direct_s,
        "direct_mib_s": mib / direct_s,
        "direct_vs_raw": raw_s / direct_s,
        "broker_bytes_per_dest": max(carried_direct, carried_swarm / len(imageswarm.SITES)),
        "relay_bytes_per_dest": rss_single["carried"],
        "cpu_s_per_mib": cpu_per_mib,
        "cap_by_cpu_mib_s": by_cpu,
        "cap_by_wall_mib_s": by_wall,
        "link_cap_mib_s": cap_mib,
        "shaped_direct_mib_s": a.fanout_mib / shaped_s,
        "swarm16_over_one": swarm16["seconds"] / swarm_one["seconds"] if swarm_ok else None,
        "swarm_one_s": swarm_one["seconds"],
        "swarm16_s": swarm16["seconds"],
        "swarm16_pieces_from_source": swarm16["from_source"],
        "swarm16_peers_per_site": swarm16["peers"],
        "pieces_per_image": -(-(a.fanout_mib << 10) // a.piece_kib),
        "relay16_over_one": fan["seconds"] / one_s if fan_ok else None,
        "fanout_mib": a.fanout_mib,
        "relay_one_shaped_s": one_s,
        "relay16_shaped_s": fan["seconds"] if fan_ok else None,
        "fanout_rounds": fan["rounds"],
        "fanout_failed": fan["failed"],
        "broker_peak_rss_mib_after_single": rss_single["peak_mib"],
        "broker_peak_rss_mib_after_fanout": rss_all["peak_mib"],
        "broker_peak_buffered_chunks": rss_all["buffered"],
    }
    out["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    out["grants"] = "broker ImageOrders: direct via Replicate, swarm in-process (tracker)"
    out["problems"] = problems
    print(f"{'figure':<44}{'value':>14}")
    for k, v in out.items():
        print(f"{k:<44}{v:>14.3f}" if isinstance(v, float) else f"{k:<44}{v!s:>14}")
    for text in problems:
        print(f"FAILED: {text}")
    print(json.dumps(out))
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
