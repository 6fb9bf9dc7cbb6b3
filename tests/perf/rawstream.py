"""The stream floor: a bare grpc.aio mTLS server and client speaking Meridian's wire.

``server`` -- the ``AgentGateway`` service with nothing behind it: read Hello, answer
Welcome, ack every heartbeat. Same TLS (the federation's CA and a broker certificate,
client certificates required) and the same gRPC options as the real gateway; no etcd,
no identity check, no registry. stdout, one JSON line each:
``{"event": "listening"}``, ``{"event": "streams", "n": ..., "t": ...}`` (at most every
0.2 s, when the count changed) and ``{"event": "end", "site": ..., "t": ...}`` the moment
a stream's handler learns that its peer is gone.

``client`` -- one tiny stream (Hello, then a heartbeat every ``--interval``); prints
``{"event": "ready"}`` once the first ack is back. The detection benchmark kills it with
SIGKILL and times the server's ``end`` line.

The fan-in benchmark points real agents (``tests.perf.swarm``) at ``server``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from meridian.v1 import agent_pb2 as pb
from meridian.v1 import agent_pb2_grpc as pb_grpc

# the real gateway's server options (broker.gateway.server.build)
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.server_handshake_timeout_ms", 30_000),
]


def emit(**fields: Any) -> None:
    print(json.dumps({**fields, "t": time.time()}), flush=True)


class Echo(pb_grpc.AgentGatewayServicer):
    def __init__(self, heartbeat_ms: int) -> None:
        self.heartbeat_ms = heartbeat_ms
        self.streams = 0

    async def Connect(  # type: ignore[override]
        self,
        request_iterator: Any,
        context: grpc.aio.ServicerContext[pb.AgentMessage, pb.BrokerMessage],
    ) -> None:
        site = "?"
        counted = False
        try:
            first = await context.read()
            if not isinstance(first, pb.AgentMessage) or first.WhichOneof("body") != "hello":
                return
            site = first.hello.site_id
            version = first.hello.version
            await context.write(
                pb.BrokerMessage(
                    welcome=pb.Welcome(
                        session_id=site,
                        version=pb.ProtocolVersion(major=version.major, minor=version.minor),
                        heartbeat_interval_ms=self.heartbeat_ms,
                        replica="raw",
                    )
                )
            )
            self.streams += 1
            counted = True
            while True:
                msg = await context.read()
                if not isinstance(msg, pb.AgentMessage):
                    return
                if msg.WhichOneof("body") == "heartbeat":
                    await context.write(
                        pb.BrokerMessage(heartbeat_ack=pb.HeartbeatAck(seq=msg.heartbeat.seq))
                    )
        finally:
            # first thing once the handler learns the peer is gone (EOF, error or cancel)
            emit(event="end", site=site)
            if counted:
                self.streams -= 1


async def report_streams(echo: Echo) -> None:
    last = -1
    while True:
        await asyncio.sleep(0.2)
        if echo.streams != last:
            last = echo.streams
            emit(event="streams", n=last)


@dataclass(frozen=True)
class Tls:
    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def read(cls, args: argparse.Namespace) -> Tls:
        return cls(*(Path(getattr(args, name)).read_bytes() for name in ("ca", "cert", "key")))


async def serve(args: argparse.Namespace, tls: Tls) -> None:
    credentials = grpc.ssl_server_credentials(
        [(tls.key, tls.cert)], root_certificates=tls.ca, require_client_auth=True
    )
    server = grpc.aio.server(options=SERVER_OPTIONS)
    echo = Echo(args.heartbeat_ms)
    pb_grpc.add_AgentGatewayServicer_to_server(echo, server)
    server.add_secure_port(args.listen, credentials)
    await server.start()
    emit(event="listening")
    reporter = asyncio.create_task(report_streams(echo))
    try:
        await server.wait_for_termination()
    finally:
        reporter.cancel()


async def client(args: argparse.Namespace, tls: Tls) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert
    )
    async with grpc.aio.secure_channel(args.target, credentials) as channel:
        call = pb_grpc.AgentGatewayStub(channel).Connect()
        hello = pb.Hello(site_id=args.site, version=pb.ProtocolVersion(major=1, minor=1))
        await call.write(pb.AgentMessage(hello=hello))
        await call.read()  # Welcome
        seq = 0
        while True:
            seq += 1
            beat = pb.Heartbeat(seq=seq, sent_unix_ms=int(time.time() * 1000))
            await call.write(pb.AgentMessage(heartbeat=beat))
            await call.read()
            if seq == 1:
                emit(event="ready", site=args.site)
            await asyncio.sleep(args.interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    for role in ("server", "client"):
        p = sub.add_parser(role)
        p.add_argument("--ca", required=True)
        p.add_argument("--cert", required=True)
        p.add_argument("--key", required=True)
    server = sub.choices["server"]
    server.add_argument("--listen", required=True, help="127.0.0.1:port")
    server.add_argument("--heartbeat-ms", type=int, default=1000)
    one = sub.choices["client"]
    one.add_argument("--target", required=True)
    one.add_argument("--site", required=True)
    one.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    tls = Tls.read(args)
    asyncio.run(serve(args, tls) if args.role == "server" else client(args, tls))


if __name__ == "__main__":
    main()
