"""Over real TLS, a refused body holds nothing: a real uvicorn serving HTTPS with a
certificate from the project's PKI, the real API guard in front of a route, and a
raw-socket client as an attacker would write it.

Asserted, several times over: an authenticated client streaming a chunked body past the
limit gets its 413 (or at worst a reset) within seconds; a client that stalls mid-body
gets 408 within the guard's idle bound instead of holding the connection; and each time
the server's open connection count returns to its baseline. Figures printed with ``-s``.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from broker.api.auth import DevAuthenticator
from broker.api.guard import Guard
from broker.pki import authority
from tests.support import rawpost
from tests.support.etcd import free_ports

LIMIT = 1024 * 1024
IDLE = 1.0
RUNS = 5


async def _route(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


@dataclass
class Served:
    server: uvicorn.Server
    port: int
    verify: ssl.SSLContext
    token: str

    def connections(self) -> int:
        return len(self.server.server_state.connections)

    def settle(self, baseline: int, within: float = 10.0) -> float:
        """Seconds until the open connections are back to ``baseline`` (fails if never)."""
        started = time.monotonic()
        while self.connections() > baseline:
            assert time.monotonic() - started < within, f"{self.connections()} still open"
            time.sleep(0.05)
        return time.monotonic() - started


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = Path(tmp_path_factory.mktemp("tlsbody"))
    ca = authority.create(base / "pki", "meridian.test")
    issued = ca.issue_broker("broker-1")
    token_file = base / "token"
    token_file.write_text("t" * 32 + "\n")
    os.chmod(token_file, 0o600)
    guard = Guard(
        _route, auth=DevAuthenticator(token_file), max_body_bytes=LIMIT, body_idle=IDLE
    )
    (port,) = free_ports(1)
    server = uvicorn.Server(
        uvicorn.Config(
            guard, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
            ssl_certfile=str(issued.cert_path), ssl_keyfile=str(issued.key_path),
        )
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    started = time.monotonic()
    while not server.started:
        assert thread.is_alive() and time.monotonic() - started < 15, "uvicorn did not start"
        time.sleep(0.05)
    verify = ssl.create_default_context(cafile=str(ca.paths.ca_cert))
    try:
        yield Served(server, port, verify, "t" * 32)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def test_a_chunked_body_past_the_limit_gets_413_every_time(served: Served) -> None:
    baseline = served.connections()
    for run in range(RUNS):
        started = time.monotonic()
        answer = rawpost.post(
            served.port, served.verify, token=served.token, chunked=True, total=200 * 10**6
        )
        took = time.monotonic() - started
        settled = served.settle(baseline)
        print(
            f"\nrun {run}: {answer.status or 'reset'} after {answer.sent / 1e6:.1f} MB "
            f"in {took * 1000:.0f} ms; connections {baseline} -> {served.connections()} "
            f"({settled * 1000:.0f} ms after)"
        )
        assert answer.status == 413 or answer.reset, answer
        assert answer.status != 413 or answer.body.get("status") == 413
        assert took < 5
        assert LIMIT <= answer.sent < 20 * LIMIT


def test_a_body_that_stalls_is_408_and_the_connection_freed(served: Served) -> None:
    baseline = served.connections()
    for run in range(3):
        started = time.monotonic()
        answer = rawpost.post(
            served.port, served.verify, token=served.token, chunked=True,
            total=200 * 10**6, stall_after=rawpost.CHUNK,
        )
        took = time.monotonic() - started
        settled = served.settle(baseline)
        print(
            f"\nstalled run {run}: {answer.status} after {answer.sent} bytes in "
            f"{took:.2f} s; connections {baseline} -> {served.connections()}"
        )
        assert answer.status == 408, answer
        assert answer.body.get("type") == "urn:meridian:problem:body-stalled"
        assert took < IDLE + 5
        assert settled < 5
