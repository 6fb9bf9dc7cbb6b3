"""The fan-in benchmark's fleet: site certificates, registration, agent swarms, bare servers.

``Swarms`` are the agent processes of one phase (``tests.perf.swarm``, thousands of sim
agents each, every agent its own certificate, channel and stream); ``RawServers`` the
bare grpc.aio mTLS servers (``tests.perf.rawstream server``) the same agents dial in the
baseline phase, one per broker replica, so both phases spread the agents alike.
"""

from __future__ import annotations

import concurrent.futures
import json
import queue
import signal
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx

from broker.devfed import procs
from broker.devfed.federation import Federation, toml
from broker.pki import authority
from tests.perf import harness
from tests.perf.harness import Helper


class Swarms:
    """The agent processes of one phase, and the lag windows cut out of them.

    Held (``hold``): every swarm builds its agents, then waits; ``go`` starts them all
    dialling at once, so the herd's time does not include the swarms' own start-up."""

    def __init__(
        self,
        name: str,
        groups: list[list[Path]],
        state: Path,
        ramp: float = 0.0,
        *,
        hold: bool = False,
        nice: int = 0,
    ) -> None:
        self.name = name
        self.started = time.monotonic()
        self.built_s: float | None = None
        self.stats = state / "stats"
        self.agents = sum(len(configs) for configs in groups)
        self.procs: list[procs.Proc] = []
        for i, configs in enumerate(groups, 1):
            proc_name = f"{name}-{i}"
            argv = harness.python_module(
                "tests.perf.swarm",
                "--stats-dir",
                str(self.stats),
                "--name",
                proc_name,
                "--ramp",
                str(ramp),
                *(["--hold"] if hold else []),
                *([f"--nice={nice}"] if nice else []),
                *[f"--config={c}" for c in configs],
            )
            self.procs.append(procs.start(proc_name, argv, state / "logs" / f"{proc_name}.log"))
        self.dumps = 0
        self.missing: set[str] = set()  # swarms that did not answer a dump

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def go(self, timeout: float = 600.0) -> float:
        """Wait until every held swarm has built its agents, then start them all dialling;
        the wall time of the start."""
        for proc in self.procs:
            ready = self.stats / f"{proc.name}.ready"
            harness.wait_for(
                lambda r=ready, p=proc: r.exists() or not p.alive(),
                timeout,
                ready.name,
            )
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited while building its agents: see {proc.log}")
        self.built_s = round(time.monotonic() - self.started, 1)
        t0 = time.time()
        for proc in self.procs:
            proc.signal(signal.SIGUSR2)
        return t0

    def dump(self) -> list[dict[str, Any]]:
        """SIGUSR1 every swarm; their stats since the previous dump."""
        self.dumps += 1
        for proc in self.procs:
            proc.signal(signal.SIGUSR1)
        out = []
        for proc in self.procs:
            path = self.stats / f"{proc.name}.{self.dumps}.json"
            try:
                harness.wait_for(lambda p=path: p.exists(), 180, f"{path.name}")
            except TimeoutError:
                # a swarm that died or is too starved to answer: its agents are missing
                # from the figures, and the report says so
                self.missing.add(proc.name)
                continue
            out.append(json.loads(path.read_text()))
        return out

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


def issue(fed: Federation, sites: list[str]) -> float:
    """Issue every site certificate (threads: the work is keygen, signing and fsync)."""
    ca = authority.load(fed.pki.root)
    todo = [s for s in sites if not fed.pki.site_cert(s).exists()]
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(ca.issue_site, todo))
    return time.monotonic() - started


def register(fed: Federation, sites: list[str]) -> float:
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {fed.token}"}
    with httpx.Client(
        base_url=fed.api_url(), timeout=30.0, headers=headers, verify=fed.api_verify
    ) as client:

        def one(item: tuple[int, str]) -> None:
            i, site = item
            body = {"id": site, "region": f"region-{i % 3 + 1}", "zone": f"zone-{i % 2 + 1}"}
            resp = client.post("/v1/sites", json=body)
            if resp.status_code not in (201, 409):
                raise RuntimeError(f"registering {site}: {resp.status_code} {resp.text}")

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(one, enumerate(sites)))
    return time.monotonic() - started


def groups_of(paths: list[Path], processes: int) -> list[list[Path]]:
    size = -(-len(paths) // processes)
    return [paths[i : i + size] for i in range(0, len(paths), size)]


def agent_config(
    fed: Federation,
    site: str,
    directory: Path,
    session: list[str],
    brokers: list[str] | None = None,
) -> Path:
    """The federation's own settings of ``site``'s agent, with ``session`` settings
    (``KEY=VALUE``, the value read as TOML) and, if given, other ``brokers``."""
    data = tomllib.loads(fed.agent_config(site).read_text())
    for item in session:
        key, _, value = item.partition("=")
        data["session"][key] = tomllib.loads(f"v = {value}")["v"]
    if brokers is not None:
        data["session"]["brokers"] = brokers
    path = directory / f"{site}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    path.write_text(toml({k: v for k, v in data.items() if isinstance(v, dict)}, top))
    return path


class RawServers:
    """``count`` bare servers on free ports, each with a broker certificate."""

    def __init__(self, fed: Federation, count: int, heartbeat: float, logs: Path) -> None:
        pki = fed.pki
        self.addresses = [f"127.0.0.1:{harness.free_port()}" for _ in range(count)]
        self.helpers: list[Helper] = []
        self.streams = [0] * count
        for i, address in enumerate(self.addresses, 1):
            argv = harness.python_module(
                "tests.perf.rawstream", "server", "--listen", address,
                "--ca", str(pki.ca_cert),
                "--cert", str(pki.broker_cert(f"broker-{i}")),
                "--key", str(pki.broker_key(f"broker-{i}")),
                "--heartbeat-ms", str(int(heartbeat * 1000)),
            )  # fmt: skip
            self.helpers.append(Helper(f"raw-server-{i}", argv, logs / f"raw-server-{i}.log"))
        for helper in self.helpers:
            helper.expect(lambda line: line["event"] == "listening", 30)

    @property
    def pids(self) -> list[int]:
        return [h.pid for h in self.helpers]

    def wait_streams(self, n: int, timeout: float) -> float:
        """Wall time at which the servers together held ``n`` streams (TimeoutError)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, helper in enumerate(self.helpers):
                try:
                    while True:
                        line = helper.lines.get_nowait()
                        if line["event"] == "streams":
                            self.streams[i] = line["n"]
                            if sum(self.streams) >= n:
                                return float(line["t"])
                except queue.Empty:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"bare servers hold {sum(self.streams)} of {n} streams")

    def stop(self) -> None:
        for helper in self.helpers:
            helper.stop()
