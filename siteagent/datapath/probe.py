"""Verification probes from inside a gateway namespace: ICMP and TCP to every peer.

ICMP is the system ``ping`` run in the namespace (``ip netns exec``): loss and average
RTT. TCP is a connection from a socket made inside the namespace to the peer gateway's
``Responder``, which answers one line — proof that a stream crosses the tunnel both ways
(``connect`` alone can succeed on a half-broken path; a reply cannot). Probes to all
peers run at once, so a site's verify costs one probe's time, not one per peer.

Invariant: a probe never raises for an unreachable peer — unreachability is its result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import socket
import time
from dataclasses import asdict, dataclass

from pyroute2 import netns

PROBE_PORT = 4800
HELLO = b"meridian-probe\n"
ANSWER = b"meridian-ok\n"
_PING = re.compile(r"(\d+) packets transmitted, (\d+) received")
_RTT = re.compile(r"= [\d.]+/([\d.]+)/")


@dataclass(frozen=True, slots=True)
class PairResult:
    source: str
    target: str
    address: str
    icmp: bool
    tcp: bool
    loss: float  # 0.0 .. 1.0
    rtt_ms: float | None  # ICMP average
    tcp_ms: float | None  # TCP connect + one exchange
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.icmp and self.tcp

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "ok": self.ok}


class Sockets:
    """Makes sockets inside one namespace: a thread that entered it once (setns is
    per-thread), so each socket costs a syscall, not a fork."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1,
            thread_name_prefix=f"ns-{namespace}",
            initializer=netns.setns,
            initargs=(namespace, 0),
        )

    async def socket(self, kind: int = socket.SOCK_STREAM) -> socket.socket:
        loop = asyncio.get_running_loop()
        sock = await loop.run_in_executor(self._pool, socket.socket, socket.AF_INET, kind)
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class Responder:
    """Answers TCP probes on ``PROBE_PORT`` inside the gateway namespace."""

    def __init__(self, sockets: Sockets, port: int = PROBE_PORT) -> None:
        self.sockets, self.port = sockets, port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        sock = await self.sockets.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", self.port))
        self._server = await asyncio.start_server(self._answer, sock=sock)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if await asyncio.wait_for(reader.readline(), 5.0) == HELLO:
                writer.write(ANSWER)
                await writer.drain()
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


async def ping(
    namespace: str, address: str, count: int, wait: float
) -> tuple[float, float | None, str]:
    """(loss, average RTT ms or None, error) of ``count`` pings from ``namespace``."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", namespace, "ping", "-n", "-q", "-c", str(count), "-i", "0.2",
        "-W", str(max(1, round(wait))), address,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    text = out.decode(errors="replace")
    sent = _PING.search(text)
    if sent is None:
        return 1.0, None, (err.decode(errors="replace").strip() or "ping failed")[:200]
    loss = 1.0 - int(sent.group(2)) / max(1, int(sent.group(1)))
    rtt = _RTT.search(text)
    return loss, float(rtt.group(1)) if rtt else None, ""


async def tcp(sockets: Sockets, address: str, port: int, wait: float) -> tuple[float | None, str]:
    """Milliseconds to connect and get the responder's answer, or (None, why)."""
    loop = asyncio.get_running_loop()
    sock = await sockets.socket()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(wait):
            await loop.sock_connect(sock, (address, port))
            await loop.sock_sendall(sock, HELLO)
            got = await loop.sock_recv(sock, len(ANSWER))
        if got != ANSWER:
            return None, f"tcp {address}:{port}: unexpected answer {got[:20]!r}"
        return (time.perf_counter() - started) * 1000, ""
    except TimeoutError:
        return None, f"tcp {address}:{port}: no answer within {wait:g} s"
    except OSError as exc:
        return None, f"tcp {address}:{port}: {exc.strerror or exc}"
    finally:
        sock.close()


async def probe(
    site: str,
    sockets: Sockets,
    targets: list[tuple[str, str]],
    *,
    count: int = 3,
    wait: float = 2.0,
    port: int = PROBE_PORT,
) -> list[PairResult]:
    """Probe every (peer site, address) from ``site``'s gateway namespace, all at once."""

    async def one(peer: str, address: str) -> PairResult:
        (loss, rtt, icmp_err), (tcp_ms, tcp_err) = await asyncio.gather(
            ping(sockets.namespace, address, count, wait),
            tcp(sockets, address, port, wait),
        )
        error = "; ".join(e for e in (icmp_err, tcp_err) if e)
        if loss >= 1.0 and not error:
            error = f"icmp {address}: {count} of {count} lost"
        return PairResult(site, peer, address, loss < 1.0, tcp_ms is not None, loss, rtt,
                          tcp_ms, error)  # fmt: skip

    return list(await asyncio.gather(*(one(p, a) for p, a in targets)))
