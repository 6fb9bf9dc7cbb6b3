"""Attack test: huge bodies against the leader's API cost it nothing (invariant 11).

Real broker processes over a real etcd. An attacker streams a 200 MB body at the
leader's API — without a token and with a valid token, each declaring its length and
chunked (the raw sender is ``tests.support.rawpost``: over TLS it tells a session ticket
from an answer). While it does, the test polls the leader's
``/healthz`` and samples its RSS. Asserted: the attacker gets 401 / 413 problem+json,
the leader's term (name and fence) is the same afterwards, no site or event was written,
``/healthz`` stayed responsive and the leader's RSS stayed within a small bound. The figures are
printed (``-s``) for the record.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from broker.devfed.federation import Federation
from tests.support import rawpost
from tests.support.federation import running_federation

ATTACK_BYTES = 200 * 1000 * 1000
RSS_GROWTH_MIB = 64  # generous: a buffered body would be 200 MB (plus its parse)
HEALTHZ_BOUND = 1.5  # seconds; the lease TTL is 2 s


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with running_federation(Path(tmp_path_factory.mktemp("attack")), []) as fed:
        yield fed


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def post_huge(
    port: int, verify: ssl.SSLContext | bool, *, token: str | None, chunked: bool
) -> rawpost.Answer:
    """Stream ``ATTACK_BYTES`` of malformed JSON until the server answers or hangs up."""
    return rawpost.post(port, verify, token=token, chunked=chunked, total=ATTACK_BYTES)


@dataclass
class Watch:
    """Polls the leader's /healthz and samples its RSS until stopped."""

    url: str
    pid: int
    verify: ssl.SSLContext | bool
    worst_healthz: float = 0.0
    failures: int = 0
    max_rss: float = 0.0
    polls: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=5.0, verify=self.verify) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    ok = client.get(f"{self.url}/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.worst_healthz = max(self.worst_healthz, time.monotonic() - started)
                self.failures += 0 if ok else 1
                self.polls += 1
                self.max_rss = max(self.max_rss, rss_mib(self.pid))
                time.sleep(0.05)


def leader_of(fed: Federation) -> tuple[str, int]:
    found = fed.api_get("/v1/leader")
    return str(found["leader"]), int(found["fence"])


ATTACKS = [
    pytest.param(None, False, 401, id="anonymous-content-length"),
    pytest.param(None, True, 401, id="anonymous-chunked"),
    pytest.param("TOKEN", False, 413, id="authenticated-content-length"),
    pytest.param("TOKEN", True, 413, id="authenticated-chunked"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("token", "chunked", "status"), ATTACKS)
def test_200mb_body_costs_the_leader_nothing(
    brokers: Federation, token: str | None, chunked: bool, status: int
) -> None:
    fed = brokers
    name, fence = leader_of(fed)
    pid = fed.running[name].pid
    sites_before = fed.api_get("/v1/sites")["sites"]
    events_before = fed.api_get("/v1/events?limit=1000")["events"]
    rss_before = rss_mib(pid)
    watch = Watch(fed.api_url(name), pid, fed.api_verify)
    poller = threading.Thread(target=watch.run, daemon=True)
    poller.start()
    port = fed.ports[f"{name}.api"]
    try:
        answer = post_huge(
            port, fed.api_verify, token=fed.token if token else None, chunked=chunked
        )
        time.sleep(3 * 2.0)  # three lease TTLs: a starved refresh would have shown by now
    finally:
        watch.stop.set()
        poller.join(timeout=10)
    after = leader_of(fed)
    print(
        f"\n[{status}] sent {answer.sent / 1e6:.1f} MB of {ATTACK_BYTES / 1e6:.0f} MB; "
        f"leader {name} term {fence} -> {after[0]} term {after[1]}; "
        f"RSS {rss_before:.0f} -> max {watch.max_rss:.0f} MiB; "
        f"/healthz worst {watch.worst_healthz * 1000:.0f} ms over {watch.polls} polls"
    )
    assert answer.status == status, answer.head
    assert b"application/problem+json" in answer.head
    assert answer.body.get("status") == status
    assert answer.sent < ATTACK_BYTES  # the server hung up long before the end
    assert after == (name, fence), "the attack cost the leader its term"
    assert fed.api_get("/v1/sites")["sites"] == sites_before
    assert fed.api_get("/v1/events?limit=1000")["events"] == events_before
    assert watch.failures == 0 and watch.worst_healthz < HEALTHZ_BOUND
    assert watch.max_rss - rss_before < RSS_GROWTH_MIB


def test_the_api_speaks_only_tls_with_the_federation_ca(brokers: Federation) -> None:
    """Tokens never cross in clear: plain HTTP gets no answer, an unverified peer no
    connection, and the CLI (cli.toml names the CA) verifies the broker's certificate."""
    fed = brokers
    assert fed.api_url().startswith("https://")
    plain = fed.api_url().replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(plain + "/healthz", timeout=5.0)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(fed.api_url() + "/healthz", timeout=5.0)  # the system's trust store
    assert httpx.get(fed.api_url() + "/healthz", verify=fed.api_verify).status_code == 200
    cli = fed.state / "cli.toml"
    assert f'ca_file = "{fed.pki.ca_cert}"' in cli.read_text()
    env = {**os.environ, "MERIDIAN_CONFIG": str(cli)}
    env.pop("MERIDIAN_CA_FILE", None)
    shown = subprocess.run(
        [sys.executable, "-m", "broker.cli.main", "leader"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert leader_of(fed)[0] in shown.stdout


def test_an_authenticated_body_within_the_limit_streams_in(brokers: Federation) -> None:
    """The bound refuses attackers, not clients: 900 kB streamed in chunks over TLS is
    read whole and answered (422: it is not a site), every time."""
    fed = brokers
    size = 900_000

    def chunks() -> Iterator[bytes]:
        yield b'{"id": "x", "region": "eu", "labels": {"note": "'
        for _ in range(size // 60_000):
            yield b"a" * 60_000
        yield b'"}}'

    headers = {"Authorization": f"Bearer {fed.token}", "Content-Type": "application/json"}
    for _ in range(5):
        resp = httpx.post(
            fed.api_url() + "/v1/sites", content=chunks(), headers=headers,
            verify=fed.api_verify, timeout=10.0,
        )
        assert resp.status_code == 422 and resp.json()["field"] == "labels", resp.text
