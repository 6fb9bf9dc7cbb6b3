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

Connecting, twice if need be:

- all at once (a herd: what a broker restart causes) -- the time until every agent shows
  connected, from the start of the swarm processes (their start-up included): Meridian,
  every site's health verdict UP (read from etcd, so the observer costs the broker
  nothing; the time is the newest verdict's own ``since_ms``); baseline, the server
  holding every stream. Bounded by ``--herd-timeout``;
- if the herd has not converged by then, the swarms are stopped, every site is let go
  DOWN, and the agents start again spread over ``--ramp`` seconds (each at a random
  moment), which gives the time to all UP under a paced arrival.

Then, once all are connected, a steady window after ``--settle`` seconds:

- heartbeat lag: ack round trips the agents measured (``SessionStats.lags_ms``);
  p50/p99, nearest rank;
- CPU of the server process over the window, from ``/proc/<pid>/stat`` (% of one core),
  and of etcd and the agent swarms for context;
- RSS: ``VmRSS`` of the server before the agents dial and after the window; the
  difference divided by the number of agents is the memory per site.

Certificates for all sites are issued first (EC P-256, a few threads) and timed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import signal
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from broker import settings as broker_settings
from broker.settings import EtcdSettings
from broker.devfed import procs
from broker.devfed.federation import Federation, toml
from broker.pki import authority
from tests.perf import fanin_headline, harness
from tests.perf.harness import Helper, say


@dataclass
class Phase:
    name: str
    herd_s: float | None = None
    herd_how: str = ""
    ramp_s: float | None = None
    ramp_how: str = "not needed"
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

    def __init__(self, name: str, groups: list[list[Path]], state: Path, ramp: float = 0.0) -> None:
        self.name = name
        self.stats = state / "stats"
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
    phase: Phase,
    swarms: Swarms,
    pids: dict[str, list[int]],
    server: int,
    args: argparse.Namespace,
    etcd: EtcdSettings | None = None,
) -> None:
    """Settle, then one steady window: lags, CPU, RSS."""
    say(f"{phase.name}: settling {args.settle:.0f} s, then a {args.window:.0f} s window")
    time.sleep(args.settle)
    before = swarms.dump()
    window = harness.CpuWindow({**pids, "agents (all swarms)": swarms.pids})
    window.start()
    kv_before = fanin_headline.etcd_kv_requests(etcd) if etcd else None
    started = time.monotonic()
    time.sleep(args.window)
    after = swarms.dump()
    phase.cpu = window.stop()
    kv_after = fanin_headline.etcd_kv_requests(etcd) if etcd else None
    if kv_before is not None and kv_after is not None:
        by_method = {m: n - kv_before.get(m, 0) for m, n in kv_after.items()}
        phase.extra["etcd_kv_requests_by_method"] = by_method
        phase.extra["etcd_kv_requests_in_window"] = sum(by_method.values())
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


def herd_counts(herd: list[dict[str, Any]], tracker: harness.UpTracker) -> dict[str, int]:
    """What the agents and the tracker saw while all connected at once."""
    return {
        "peak_up": tracker.peak,
        "up_at_end": tracker.up(),
        "up_to_down": tracker.downs,
        # the first term seen counts as one: 1 = the leader kept its term throughout
        "leader_terms": tracker.new_terms,
        "welcomed_streams": sum(d["welcomed"] for d in herd),
        "connect_attempts": sum(d["connects"] for d in herd),
        "refused_busy_or_unavailable": sum(d.get("refused", 0) for d in herd),
        "connect_timeouts": sum(d.get("timeouts", 0) for d in herd),
    }


# What the broker's log says about a storm: each pattern counted over the whole phase.
LOG_DIGEST = {
    "election_lease_not_refreshed": re.compile(r"campaign: .* not refreshed"),
    "leader_terms_started": re.compile(r"campaign: .*leading with fence"),
    "replica_lease_expired": re.compile(r"replica lease \w+ expired"),
    "heartbeats_not_recorded": re.compile(r"heartbeat not recorded"),
    "status_writes_waiting": re.compile(r"status updates wait for etcd"),
    "down_stream_closed": re.compile(r"DOWN \(agent stream closed\)"),
    "down_no_heartbeat": re.compile(r"DOWN \(no heartbeat"),
    "site_health_paused": re.compile(r"site health paused"),
}


def log_digest(path: Path) -> dict[str, int]:
    """Counts of the LOG_DIGEST patterns in a broker log (empty if it is missing)."""
    counts = dict.fromkeys(LOG_DIGEST, 0)
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    for line in text.splitlines():
        for name, pattern in LOG_DIGEST.items():
            if pattern.search(line):
                counts[name] += 1
    return counts


def groups_of(paths: list[Path], processes: int) -> list[list[Path]]:
    size = -(-len(paths) // processes)
    return [paths[i : i + size] for i in range(0, len(paths), size)]


def raw_phase(fed: Federation, sites: list[str], state: Path, args: argparse.Namespace) -> Phase:
    phase = Phase("baseline")
    pki = fed.pki
    address = f"127.0.0.1:{harness.free_port()}"
    server = Helper(
        "raw-server",
        harness.python_module(
            "tests.perf.rawstream",
            "server",
            "--listen",
            address,
            "--ca",
            str(pki.ca_cert),
            "--cert",
            str(pki.broker_cert("broker-1")),
            "--key",
            str(pki.broker_key("broker-1")),
            "--heartbeat-ms",
            str(int(args.heartbeat * 1000)),
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
        try:
            line = server.expect(
                lambda line: line["event"] == "streams" and line["n"] >= len(sites),
                args.herd_timeout,
            )
            phase.herd_s = round(line["t"] - t0, 2)
            phase.herd_how = "server holds every stream"
            say(f"baseline: all {len(sites)} streams up after {phase.herd_s} s")
        except TimeoutError:
            phase.herd_how = f"NOT REACHED after {args.herd_timeout:.0f} s"
            say(f"baseline: not every stream up after {args.herd_timeout:.0f} s")
        measure(phase, swarms, {"server": [server.pid]}, server.pid, args)
    finally:
        if swarms is not None:
            swarms.stop()
        server.stop()
    return phase


def meridian_phase(
    fed: Federation,
    sites: list[str],
    state: Path,
    args: argparse.Namespace,
    report: harness.Report,
) -> Phase:
    phase = Phase("Meridian")
    swarms: Swarms | None = None
    tracker: harness.UpTracker | None = None
    try:
        etcd = fed.start_etcd()
        broker = fed.start_broker("broker-1")
        fed.write_records()
        phase.extra["register_s"] = round(register(fed, sites), 1)
        say(f"Meridian: {len(sites)} sites registered in {phase.extra['register_s']} s")
        time.sleep(2)
        phase.rss_before_kib = harness.rss_kib(broker.pid)
        groups = groups_of([fed.agent_config(site) for site in sites], args.processes)
        root = broker_settings.load(fed.state / "brokers" / "broker-1.toml").etcd.root
        tracker = harness.UpTracker(harness.etcd_client(fed.etcd_settings()), root, sites)
        say(f"Meridian: {len(sites)} agents → broker-1, all at once")
        t0 = time.time()
        swarms = Swarms("swarm", groups, state)
        all_up = tracker.wait_all_up(args.herd_timeout)
        if all_up is not None:
            phase.herd_s = round(all_up - t0, 2)
            phase.herd_how = "newest UP verdict's since_ms"
            phase.extra["herd_leader_terms"] = tracker.new_terms
            herd = swarms.dump()
            phase.extra["herd"] = herd_counts(herd, tracker)
            say(
                f"Meridian: all {len(sites)} UP after {phase.herd_s} s "
                f"({phase.extra['herd']['connect_attempts']} stream attempts, "
                f"{phase.extra['herd']['refused_busy_or_unavailable']} refused with a "
                f"retry_after, {phase.extra['herd']['connect_timeouts']} timed out; "
                f"{tracker.new_terms} leader term(s) seen, {tracker.downs} UP→DOWN)"
            )
        else:
            herd = swarms.dump()
            phase.herd_how = (
                f"NOT REACHED in {args.herd_timeout:.0f} s: peak {tracker.peak} UP, "
                f"{tracker.up()} UP at the end, {tracker.downs} UP→DOWN verdicts, "
                f"{tracker.new_terms} leader terms, "
                f"{sum(d['connects'] for d in herd)} stream attempts, "
                f"{sum(d['welcomed'] for d in herd)} welcomed"
            )
            phase.extra["herd"] = herd_counts(herd, tracker)
            say(f"Meridian: {phase.herd_how}; stopping the agents and ramping instead")
            report.trouble.append(f"connect all at once {phase.herd_how}")
            swarms.stop()
            swarms = None
            # every stream is closed now: a working leader marks every site DOWN at once
            if not tracker.wait(lambda: tracker.up() == 0, 60):
                stuck = (
                    f"{tracker.up()} sites still UP 60 s after every agent stopped: the "
                    f"leader ({tracker.leader}) runs no controllers; broker-1 restarted "
                    "before the ramp"
                )
                say(f"Meridian: {stuck}")
                report.trouble.append(stuck)
                phase.extra["broker_restarted_before_ramp"] = stuck
                fed.running["broker-1"].stop()
                broker = fed.start_broker("broker-1")
                if not tracker.wait(lambda: tracker.up() == 0, 60):
                    say(f"  {tracker.up()} sites still UP; ramping anyway")
                phase.rss_before_kib = harness.rss_kib(broker.pid)
            tracker.reset()
            say(f"Meridian: {len(sites)} agents → broker-1, spread over {args.ramp:.0f} s")
            t1 = time.time()
            swarms = Swarms("swarm-ramp", groups, state, ramp=args.ramp)
            all_up = tracker.wait_all_up(args.up_timeout)
            if all_up is None:
                phase.ramp_how = (
                    f"NOT REACHED in {args.up_timeout:.0f} s: peak {tracker.peak} UP, "
                    f"{tracker.up()} UP at the end"
                )
                say(f"Meridian: {phase.ramp_how}; measuring the window anyway")
                report.trouble.append(f"ramped connect {phase.ramp_how}")
            else:
                phase.ramp_s = round(all_up - t1, 2)
                phase.extra["ramp_leader_terms"] = tracker.new_terms
                phase.ramp_how = f"ramp {args.ramp:.0f} s; newest UP verdict's since_ms"
                say(f"Meridian: all {len(sites)} UP after {phase.ramp_s} s")
        fed.running.update({p.name: p for p in swarms.procs})
        tracker.reset()
        pids = {"broker": [broker.pid], "etcd": [etcd.pid]}
        measure(phase, swarms, pids, broker.pid, args, etcd=fed.etcd_settings())
        phase.extra["broker_log"] = log_digest(fed.state / "logs" / "broker-1.log")
        phase.extra["up_at_window_end"] = tracker.up()
        phase.extra["up_to_down_after_connect"] = tracker.downs
        phase.extra["leader_terms_after_connect"] = tracker.new_terms
    finally:
        if tracker is not None:
            tracker.close()
        if swarms is not None:
            swarms.stop()
        fed.down()
    return phase


def summarize(
    report: harness.Report, phases: list[Phase], args: argparse.Namespace, issue_s: float
) -> None:
    raw, mer = phases
    n = args.agents
    rate = {p.name: round(p.acked / p.window_s, 1) if p.window_s else 0.0 for p in phases}
    cpu_ms = {
        raw.name: fanin_headline.cpu_ms_per_heartbeat(raw.cpu.get("server"), rate[raw.name]),
        mer.name: fanin_headline.cpu_ms_per_heartbeat(mer.cpu.get("broker"), rate[mer.name]),
    }
    herd_cell = mer.herd_s if mer.herd_s is not None else "NOT REACHED"
    rows: list[list[Any]] = [
        [
            "all connected, all at once (s)",
            raw.herd_s,
            herd_cell,
            harness.ratio(mer.herd_s, raw.herd_s),
        ],
        [f"all connected, ramped over {args.ramp:.0f} s (s)", raw.ramp_s, mer.ramp_s, None],
        [
            "heartbeat lag p50 (ms)",
            raw.lags.get("p50"),
            mer.lags.get("p50"),
            harness.ratio(mer.lags.get("p50"), raw.lags.get("p50")),
        ],
        [
            "heartbeat lag p99 (ms)",
            raw.lags.get("p99"),
            mer.lags.get("p99"),
            harness.ratio(mer.lags.get("p99"), raw.lags.get("p99")),
        ],
        ["heartbeat lag max (ms)", raw.lags.get("max"), mer.lags.get("max"), None],
        ["lag samples", raw.lags.get("n"), mer.lags.get("n"), None],
        ["acks per second", rate[raw.name], rate[mer.name], None],
        ["server CPU per heartbeat (ms)", cpu_ms[raw.name], cpu_ms[mer.name], None],
        ["etcd KV requests in the window", None, mer.extra.get("etcd_kv_requests_in_window"), None],
        [
            "server CPU (% of one core)",
            raw.cpu.get("server"),
            mer.cpu.get("broker"),
            harness.ratio(mer.cpu.get("broker"), raw.cpu.get("server")),
        ],
        ["etcd CPU (% of one core)", None, mer.cpu.get("etcd"), None],
        [
            "agents CPU, all swarms (%)",
            raw.cpu.get("agents (all swarms)"),
            mer.cpu.get("agents (all swarms)"),
            None,
        ],
        [
            "server RSS before agents (MiB)",
            round(raw.rss_before_kib / 1024, 1),
            round(mer.rss_before_kib / 1024, 1),
            None,
        ],
        [
            "server RSS after (MiB)",
            round(raw.rss_after_kib / 1024, 1),
            round(mer.rss_after_kib / 1024, 1),
            None,
        ],
        [
            "RSS per site (KiB)",
            raw.rss_per_site_kib(n),
            mer.rss_per_site_kib(n),
            harness.ratio(mer.rss_per_site_kib(n), raw.rss_per_site_kib(n)),
        ],
        ["agents connected at window end", raw.connected, mer.connected, None],
        ["stream reconnects (measured swarms)", raw.reconnects, mer.reconnects, None],
    ]
    report.table(
        f"Fan-in: {n} agents in {args.processes} processes, heartbeat {args.heartbeat} s, "
        f"one server process; steady window {args.window:.0f} s",
        ["", "baseline (bare mTLS server)", "Meridian (broker-1 + etcd)", "Meridian / baseline"],
        rows,
    )
    report.note(
        f"{n} site certificates issued in {issue_s:.1f} s "
        f"({1000 * issue_s / n:.1f} ms each, EC P-256, 4 threads)"
    )
    report.note(
        f"{n} sites registered through the API in {mer.extra.get('register_s')} s "
        "(8 concurrent clients)"
    )
    report.note(
        f"all at once: Meridian = {mer.herd_how}; baseline = {raw.herd_how}; "
        "timed from the start of the swarm processes"
    )
    herd = mer.extra.get("herd")
    if herd:
        report.note(
            f"all at once, Meridian: {herd['connect_attempts']} stream attempts for {n} "
            f"agents, {herd['refused_busy_or_unavailable']} refused with a retry_after "
            f"(admission control), {herd['connect_timeouts']} gave up waiting for Welcome, "
            f"{herd['leader_terms']} leader term(s) seen (1 = the leader kept its term), "
            f"{herd['up_to_down']} UP→DOWN verdicts"
        )
    report.note(f"ramped: Meridian = {mer.ramp_how}")
    digest = mer.extra.get("broker_log") or {}
    if digest:
        said = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in digest.items())
        report.note(f"broker-1's log over the Meridian phase: {said}")
    report.note(
        f"after all were connected (settle + window, Meridian): "
        f"{mer.extra.get('up_to_down_after_connect')} UP→DOWN verdicts, "
        f"{mer.extra.get('leader_terms_after_connect')} new leader terms (the only replica "
        f"losing and retaking its own lease), {mer.extra.get('up_at_window_end')}/{n} UP at "
        "the end"
    )

    def figures(p: Phase, server: str) -> dict[str, Any]:
        return {
            "all_up_at_once_s": p.herd_s,
            "all_up_at_once_how": p.herd_how,
            "all_up_ramped_s": p.ramp_s,
            "all_up_ramped_how": p.ramp_how,
            "heartbeat_lag_ms": p.lags,
            "acks_per_s": rate[p.name],
            "window_s": p.window_s,
            "cpu_percent_of_one_core": p.cpu,
            "server": server,
            "rss_before_mib": round(p.rss_before_kib / 1024, 1),
            "rss_after_mib": round(p.rss_after_kib / 1024, 1),
            "rss_per_site_kib": p.rss_per_site_kib(n),
            "connected_at_window_end": p.connected,
            "reconnects": p.reconnects,
            **p.extra,
        }

    report.figures.update(
        {
            "agents": n,
            "processes": args.processes,
            "heartbeat_interval_s": args.heartbeat,
            "down_after_s": args.down_after,
            "ramp_s": args.ramp,
            "cert_issue_s": round(issue_s, 2),
            "meridian": figures(mer, "broker-1"),
            "baseline_raw_server": figures(raw, "rawstream server"),
            **fanin_headline.headline(
                agents=n,
                replicas=1,
                all_up_s=mer.herd_s if mer.herd_s is not None else mer.ramp_s,
                raw_cpu_ms=cpu_ms[raw.name],
                broker_cpu_ms=cpu_ms[mer.name],
                etcd_requests=mer.extra.get("etcd_kv_requests_in_window"),
                heartbeats=mer.acked,
                lag_p99_ms=mer.lags.get("p99"),
                rss_per_site_kib=mer.rss_per_site_kib(n),
                false_down=int(mer.extra.get("herd", {}).get("up_to_down", 0))
                + int(mer.extra.get("up_to_down_after_connect", 0)),
            ),
            "ratios": {
                "lag_p50": harness.ratio(mer.lags.get("p50"), raw.lags.get("p50")),
                "lag_p99": harness.ratio(mer.lags.get("p99"), raw.lags.get("p99")),
                "cpu": harness.ratio(mer.cpu.get("broker"), raw.cpu.get("server")),
                "rss_per_site": harness.ratio(mer.rss_per_site_kib(n), raw.rss_per_site_kib(n)),
                "all_up_at_once": harness.ratio(mer.herd_s, raw.herd_s),
            },
        }
    )


def run(args: argparse.Namespace, state: Path, report: harness.Report) -> None:
    fed = Federation(
        state=state / "fed",
        brokers=1,
        heartbeat_interval=args.heartbeat,
        down_after=args.down_after,
    )
    fed.prepare()
    sites = [f"edge-{i:04d}" for i in range(1, args.agents + 1)]
    issue_s = issue(fed, sites)
    say(f"{len(sites)} site certificates issued in {issue_s:.1f} s")
    raw = raw_phase(fed, sites, state, args)
    mer = meridian_phase(fed, sites, state, args, report)
    summarize(report, [raw, mer], args, issue_s)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.fanin", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--agents", type=int, default=1000, help="sim agents (default 1000)")
    parser.add_argument(
        "--processes", type=int, default=8, help="swarm processes sharing the agents (default 8)"
    )
    parser.add_argument(
        "--heartbeat", type=float, default=5.0, help="heartbeat interval in s (default 5)"
    )
    parser.add_argument(
        "--down-after",
        type=float,
        default=15.0,
        help="silence bound in s (default 15: three heartbeats)",
    )
    parser.add_argument(
        "--herd-timeout",
        type=float,
        default=180.0,
        help="how long all agents started at once may take (default 180 s; the swarms' "
        "own start-up is inside it, ~45 s for 1,000 agents on a loaded 2-core machine)",
    )
    parser.add_argument(
        "--ramp",
        type=float,
        default=60.0,
        help="if the herd does not converge: spread the starts over this many seconds (default 60)",
    )
    parser.add_argument(
        "--up-timeout",
        type=float,
        default=180.0,
        help="how long the ramped agents may take in all (default 180 s)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="pause after all are connected, before the window (default 10 s)",
    )
    parser.add_argument(
        "--window", type=float, default=45.0, help="steady measurement window in s (default 45)"
    )
    harness.common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.agents = min(args.agents, 200)
        args.processes = min(args.processes, 4)
        args.settle = min(args.settle, 5.0)
        args.window = min(args.window, 20.0)
        args.ramp = min(args.ramp, 20.0)
    harness.run_reported("fanin", args, run)


if __name__ == "__main__":
    main()
