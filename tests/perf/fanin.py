"""Fan-in: 1,000 sim agents, each its own mTLS stream, on ONE broker replica.

Two phases in one run, the same load each time: ``--agents`` sim agents in
``--processes`` swarm processes (``tests.perf.swarm``: the agent's own Session, driver
and reconciler; each agent its own certificate, channel and stream), heartbeating every
``--heartbeat`` seconds.

1. baseline -- the agents dial a bare grpc.aio mTLS server (``tests.perf.rawstream
   server``: Hello → Welcome, every heartbeat acked, nothing else; the same TLS and gRPC
   options as the gateway);
2. Meridian -- the agents dial one broker replica (with etcd), which records every
   heartbeat in etcd, judges health as leader and serves the API.

Figures per phase:

- time until every agent shows connected: Meridian, every site UP (the last ``site.up``
  event's ``at_ms``; the API is also polled); baseline, the server holding every stream;
  both from the moment the swarm processes are started (their start-up included);
- heartbeat lag: ack round trips the agents measured (``SessionStats.lags_ms``) over a
  steady window after a settling pause (p50/p99, nearest rank);
- CPU of the server process over that window, from ``/proc/<pid>/stat`` (% of one core),
  and of etcd and the agent swarm for context;
- RSS: ``VmRSS`` of the server before the agents dial and after the window; the
  difference divided by the number of agents is the memory per site.

Certificates for all sites are issued first (EC P-256, a few threads) and timed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import signal
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from broker.devfed import procs
from broker.devfed.federation import Federation, toml
from broker.pki import authority
from tests.perf import harness
from tests.perf.harness import Helper, say


@dataclass
class Phase:
    name: str
    connect_s: float = 0.0
    connect_how: str = ""
    window_s: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    lags: dict[str, float | int] = field(default_factory=dict)
    acked: int = 0
    connected: int = 0
    reconnects: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def rss_per_site_kib(self, agents: int) -> float:
        return round((self.rss_after_kib - self.rss_before_kib) / agents, 1)


class Swarms:
    """The agent processes of one phase, and the lag windows cut out of them."""

    def __init__(self, name: str, groups: list[list[Path]], state: Path) -> None:
        self.name = name
        self.stats = state / "stats"
        self.procs: list[procs.Proc] = []
        for i, configs in enumerate(groups, 1):
            proc_name = f"{name}-{i}"
            argv = harness.python_module(
                "tests.perf.swarm", "--stats-dir", str(self.stats), "--name", proc_name,
                *[f"--config={c}" for c in configs],
            )
            self.procs.append(procs.start(proc_name, argv, state / "logs" / f"{proc_name}.log"))
        self.dumps = 0

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def dump(self) -> list[dict[str, Any]]:
        """SIGUSR1 every swarm; their stats since the previous dump."""
        self.dumps += 1
        for proc in self.procs:
            proc.signal(signal.SIGUSR1)
        out = []
        for proc in self.procs:
            path = self.stats / f"{proc.name}.{self.dumps}.json"
            harness.wait_for(path.exists, 60, f"{path.name}")
            out.append(json.loads(path.read_text()))
        return out

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


def measure(
    phase: Phase, swarms: Swarms, pids: dict[str, list[int]], server: int, args: argparse.Namespace
) -> None:
    """Settle, then one steady window: lags, CPU, RSS."""
    say(f"{phase.name}: settling {args.settle:.0f} s, then a {args.window:.0f} s window")
    time.sleep(args.settle)
    before = swarms.dump()
    window = harness.CpuWindow({**pids, "agents (all swarms)": swarms.pids})
    window.start()
    started = time.monotonic()
    time.sleep(args.window)
    after = swarms.dump()
    phase.cpu = window.stop()
    phase.window_s = round(time.monotonic() - started, 1)
    phase.rss_after_kib = harness.rss_kib(server)
    lags = [lag for d in after for lag in d["lags_ms"]]
    phase.lags = harness.summary(lags, digits=2)
    phase.acked = sum(d["acked"] for d in after) - sum(d["acked"] for d in before)
    phase.connected = sum(d["connected"] for d in after)
    phase.reconnects = sum(d["connects"] for d in after) - sum(d["agents"] for d in after)


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
    with httpx.Client(base_url=fed.api_url(), timeout=30.0, headers=headers) as client:

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


def raw_phase(
    fed: Federation, sites: list[str], state: Path, args: argparse.Namespace
) -> Phase:
    phase = Phase("baseline")
    pki = fed.pki
    address = f"127.0.0.1:{harness.free_port()}"
    server = Helper(
        "raw-server",
        harness.python_module(
            "tests.perf.rawstream", "server", "--listen", address, "--ca", str(pki.ca_cert),
            "--cert", str(pki.broker_cert("broker-1")), "--key", str(pki.broker_key("broker-1")),
            "--heartbeat-ms", str(int(args.heartbeat * 1000)),
        ),
        state / "logs" / "raw-server.log",
    )
    swarms: Swarms | None = None
    try:
        server.expect(lambda line: line["event"] == "listening", 30)
        phase.rss_before_kib = harness.rss_kib(server.pid)
        configs = []
        for site in sites:
            # the federation's own agent settings, pointed at the bare server
            data = tomllib.loads(fed.agent_config(site).read_text())
            data["session"]["brokers"] = [address]
            path = state / "raw-agents" / f"{site}.toml"
            path.parent.mkdir(parents=True, exist_ok=True)
            top = {k: v for k, v in data.items() if not isinstance(v, dict)}
            path.write_text(toml({k: v for k, v in data.items() if isinstance(v, dict)}, top))
            configs.append(path)
        say(f"baseline: {len(sites)} agents → bare mTLS server")
        t0 = time.time()
        swarms = Swarms("raw-swarm", groups_of(configs, args.processes), state)
        line = server.expect(
            lambda line: line["event"] == "streams" and line["n"] >= len(sites), args.up_timeout
        )
        phase.connect_s = round(line["t"] - t0, 2)
        phase.connect_how = "server holds every stream"
        say(f"baseline: all {len(sites)} streams up after {phase.connect_s} s")
        measure(phase, swarms, {"server": [server.pid]}, server.pid, args)
    finally:
        if swarms is not None:
            swarms.stop()
        server.stop()
    return phase


def all_up(fed: Federation, sites: list[str]) -> bool:
    rows = fed.api_get("/v1/sites", timeout=30.0)["sites"]
    up = {row["id"] for row in rows if row["health"] == "UP"}
    return up.issuperset(sites)


def meridian_phase(
    fed: Federation, sites: list[str], state: Path, args: argparse.Namespace
) -> Phase:
    phase = Phase("Meridian")
    swarms: Swarms | None = None
    try:
        etcd = fed.start_etcd()
        broker = fed.start_broker("broker-1")
        fed.write_records()
        phase.extra["register_s"] = round(register(fed, sites), 1)
        say(f"Meridian: {len(sites)} sites registered in {phase.extra['register_s']} s")
        time.sleep(2)
        phase.rss_before_kib = harness.rss_kib(broker.pid)
        configs = [fed.agent_config(site) for site in sites]
        say(f"Meridian: {len(sites)} agents → broker-1")
        t0 = time.time()
        swarms = Swarms("swarm", groups_of(configs, args.processes), state)
        fed.running.update({p.name: p for p in swarms.procs})
        harness.wait_for(
            lambda: all_up(fed, sites), args.up_timeout, f"all {len(sites)} sites UP", every=0.2
        )
        polled = round(time.time() - t0, 2)
        ups = [
            e for e in fed.api_get("/v1/events?limit=1000", timeout=30.0)["events"]
            if e["kind"] == "site.up" and e["at_ms"] >= t0 * 1000
        ]
        if len({e["subject"] for e in ups}) == len(sites):
            phase.connect_s = round(max(e["at_ms"] for e in ups) / 1000 - t0, 2)
            phase.connect_how = "last site.up event"
        else:
            phase.connect_s = polled
            phase.connect_how = "API poll (every 0.2 s + request time)"
        phase.extra["all_up_polled_s"] = polled
        say(f"Meridian: all {len(sites)} UP after {phase.connect_s} s")
        pids = {"broker": [broker.pid], "etcd": [etcd.pid]}
        measure(phase, swarms, pids, broker.pid, args)
        downs = [
            e for e in fed.api_get("/v1/events?limit=1000", timeout=30.0)["events"]
            if e["kind"] == "site.down" and e["at_ms"] >= t0 * 1000
        ]
        phase.extra["site_down_events"] = len(downs)
    finally:
        if swarms is not None:
            swarms.stop()
        fed.down()
    return phase


def summarize(report: harness.Report, phases: list[Phase], args: argparse.Namespace,
              issue_s: float) -> None:
    raw, mer = phases
    n = args.agents
    rate = {p.name: round(p.acked / p.window_s, 1) if p.window_s else 0.0 for p in phases}
    rows: list[list[Any]] = [
        ["time until all connected (s)", raw.connect_s, mer.connect_s,
         harness.ratio(mer.connect_s, raw.connect_s)],
        ["heartbeat lag p50 (ms)", raw.lags.get("p50"), mer.lags.get("p50"),
         harness.ratio(mer.lags.get("p50"), raw.lags.get("p50"))],
        ["heartbeat lag p99 (ms)", raw.lags.get("p99"), mer.lags.get("p99"),
         harness.ratio(mer.lags.get("p99"), raw.lags.get("p99"))],
        ["heartbeat lag max (ms)", raw.lags.get("max"), mer.lags.get("max"), None],
        ["lag samples", raw.lags.get("n"), mer.lags.get("n"), None],
        ["acks per second", rate[raw.name], rate[mer.name], None],
        ["server CPU (% of one core)", raw.cpu.get("server"), mer.cpu.get("broker"),
         harness.ratio(mer.cpu.get("broker"), raw.cpu.get("server"))],
        ["etcd CPU (% of one core)", None, mer.cpu.get("etcd"), None],
        ["agents CPU, all swarms (%)", raw.cpu.get("agents (all swarms)"),
         mer.cpu.get("agents (all swarms)"), None],
        ["server RSS before agents (MiB)", round(raw.rss_before_kib / 1024, 1),
         round(mer.rss_before_kib / 1024, 1), None],
        ["server RSS after (MiB)", round(raw.rss_after_kib / 1024, 1),
         round(mer.rss_after_kib / 1024, 1), None],
        ["RSS per site (KiB)", raw.rss_per_site_kib(n), mer.rss_per_site_kib(n),
         harness.ratio(mer.rss_per_site_kib(n), raw.rss_per_site_kib(n))],
        ["agents connected at window end", raw.connected, mer.connected, None],
        ["stream reconnects", raw.reconnects, mer.reconnects, None],
    ]
    report.table(
        f"Fan-in: {n} agents in {args.processes} processes, heartbeat {args.heartbeat} s, "
        f"one server process; steady window {args.window:.0f} s",
        ["", "baseline (bare mTLS server)", "Meridian (broker-1 + etcd)", "Meridian / baseline"],
        rows,
    )
    report.note(f"{n} site certificates issued in {issue_s:.1f} s "
                f"({1000 * issue_s / n:.1f} ms each, EC P-256, 4 threads)")
    report.note(f"{n} sites registered through the API in {mer.extra.get('register_s')} s "
                "(8 concurrent clients)")
    report.note(f"time until all connected: Meridian = {mer.connect_how}, "
                f"baseline = {raw.connect_how}; from the start of the swarm processes")
    report.note(f"site.down events during the Meridian phase: {mer.extra.get('site_down_events')}")

    def figures(p: Phase, server: str) -> dict[str, Any]:
        return {
            "all_connected_s": p.connect_s,
            "all_connected_how": p.connect_how,
            "heartbeat_lag_ms": p.lags,
            "acks_per_s": rate[p.name],
            "window_s": p.window_s,
            "cpu_percent_of_one_core": p.cpu,
            "server": server,
            "rss_before_mib": round(p.rss_before_kib / 1024, 1),
            "rss_after_mib": round(p.rss_after_kib / 1024, 1),
            "rss_per_site_kib": p.rss_per_site_kib(n),
            "connected_at_end": p.connected,
            "reconnects": p.reconnects,
            **p.extra,
        }

    report.figures.update(
        {
            "agents": n,
            "processes": args.processes,
            "heartbeat_interval_s": args.heartbeat,
            "down_after_s": args.down_after,
            "cert_issue_s": round(issue_s, 2),
            "meridian": figures(mer, "broker-1"),
            "baseline_raw_server": figures(raw, "rawstream server"),
            "ratios": {
                "lag_p50": harness.ratio(mer.lags.get("p50"), raw.lags.get("p50")),
                "lag_p99": harness.ratio(mer.lags.get("p99"), raw.lags.get("p99")),
                "cpu": harness.ratio(mer.cpu.get("broker"), raw.cpu.get("server")),
                "rss_per_site": harness.ratio(mer.rss_per_site_kib(n), raw.rss_per_site_kib(n)),
                "all_connected": harness.ratio(mer.connect_s, raw.connect_s),
            },
        }
    )


def run(args: argparse.Namespace, state: Path, report: harness.Report) -> None:
    fed = Federation(
        state=state / "fed", brokers=1,
        heartbeat_interval=args.heartbeat, down_after=args.down_after,
    )
    fed.prepare()
    sites = [f"edge-{i:04d}" for i in range(1, args.agents + 1)]
    issue_s = issue(fed, sites)
    say(f"{len(sites)} site certificates issued in {issue_s:.1f} s")
    raw = raw_phase(fed, sites, state, args)
    mer = meridian_phase(fed, sites, state, args)
    summarize(report, [raw, mer], args, issue_s)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.fanin", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--agents", type=int, default=1000, help="sim agents (default 1000)")
    parser.add_argument("--processes", type=int, default=8,
                        help="swarm processes sharing the agents (default 8)")
    parser.add_argument("--heartbeat", type=float, default=5.0,
                        help="heartbeat interval in s (default 5)")
    parser.add_argument("--down-after", type=float, default=15.0,
                        help="silence bound in s (default 15: three heartbeats)")
    parser.add_argument("--settle", type=float, default=15.0,
                        help="pause after all are connected, before the window (default 15 s)")
    parser.add_argument("--window", type=float, default=60.0,
                        help="steady measurement window in s (default 60)")
    parser.add_argument("--up-timeout", type=float, default=300.0,
                        help="how long all agents may take to connect (default 300 s)")
    harness.common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.agents = min(args.agents, 200)
        args.processes = min(args.processes, 4)
        args.settle = min(args.settle, 5.0)
        args.window = min(args.window, 20.0)
    report = harness.Report("fanin")
    with harness.state_dir("fanin", args.keep_state) as state:
        run(args, state, report)
    report.emit()


if __name__ == "__main__":
    main()
