"""Fan-in: sim agents, each its own mTLS stream, on broker replicas, against bare servers.

Two phases in one run, the same load each time: ``--agents`` sim agents in
``--processes`` swarm processes (``tests.perf.swarm``: thousands of agents per process,
each its own certificate, channel and stream), heartbeating every ``--heartbeat``
seconds, spread over ``--replicas`` servers by the agents' own first choice. The default
is 1,000 agents on one replica at 5 s; issue 16's large run is ``--agents 10000
--replicas 3 --heartbeat 30 --processes 8``.

1. baseline -- the agents dial ``--replicas`` bare grpc.aio mTLS servers
   (``tests.perf.rawstream server``: Hello → Welcome, every heartbeat acked, nothing
   else; the same TLS and gRPC options as the gateway);
2. Meridian -- the agents dial the broker replicas (with etcd): liveness in the memory
   of the replica holding the stream, the leader judging health, the API served. This
   phase runs once per etcd client (``etcd.client``: threaded, then async; each on a
   fresh etcd, ``fanin_clients``); the main table and the headline are the default
   client's, a second table puts the clients side by side.

Connecting, twice if need be:

- all at once (a cold herd: what a broker upgrade or a network event causes) -- the time
  until every agent shows connected, from the start of the swarm processes (their
  start-up included): Meridian, every site's health verdict UP (watched in etcd, so the
  observer costs the brokers nothing; the time is the newest verdict's own
  ``since_ms``); baseline, the servers holding every stream. Bounded by
  ``--herd-timeout``;
- if the herd has not converged by then, the swarms are stopped, every site is let go
  DOWN, and the agents start again spread over ``--ramp`` seconds.

Then, once all are connected, a steady window after ``--settle`` seconds:

- heartbeat lag: ack round trips the agents measured (``SessionStats.lags_ms``);
  p50/p99, nearest rank;
- CPU of the server processes over the window, from ``/proc/<pid>/stat`` (% of one
  core), and of etcd and the agent swarms for context;
- etcd KV requests (etcd's own counters) over the window, less the observer's own reads
  (``harness.UpTracker`` watches; it reads only when its watch breaks);
- RSS: ``VmRSS`` of the servers before the agents dial and after the window; the
  difference divided by the number of agents is the memory per site;
- ``--profile S``: then S seconds of py-spy samples of every server (``profiling``), in
  a window of their own so the sampler is in no figure;
- ``--idle S``: Meridian stays idle S seconds more; every UP→DOWN verdict from the end
  of the herd to the end of the idle time is a false DOWN.

Certificates for all sites are issued first (EC P-256, a few threads) and timed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker import settings as broker_settings
from broker.devfed.federation import Federation
from broker.settings import EtcdSettings
from broker.store.client import CLIENTS
from tests.perf import fanin_clients, fanin_headline, fleet, harness, profiling
from tests.perf.harness import say


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
    idle_cpu: float = 0.0  # % of one core, the servers before any agent dials
    rss_after_kib: int = 0
    lags: dict[str, float | int] = field(default_factory=dict)
    acked: int = 0
    connected: int = 0
    reconnects: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def rss_per_site_kib(self, agents: int) -> float:
        return round((self.rss_after_kib - self.rss_before_kib) / agents, 1)


def measure(
    phase: Phase,
    swarms: fleet.Swarms,
    servers: dict[str, list[int]],
    args: argparse.Namespace,
    etcd: EtcdSettings | None = None,
    tracker: harness.UpTracker | None = None,
) -> None:
    """Settle, then one steady window: lags, CPU, RSS, etcd requests (the observer's own
    reads subtracted); then, with ``--profile``, a window of py-spy samples of its own."""
    say(f"{phase.name}: settling {args.settle:.0f} s, then a {args.window:.0f} s window")
    time.sleep(args.settle)
    before = swarms.dump()
    window = harness.CpuWindow({**servers, "agents (all swarms)": swarms.pids})
    window.start()
    kv_before = fanin_headline.etcd_kv_requests(etcd) if etcd else None
    reads_before = tracker.reads if tracker else 0
    started = time.monotonic()
    time.sleep(args.window)
    after = swarms.dump()
    phase.cpu = window.stop()
    kv_after = fanin_headline.etcd_kv_requests(etcd) if etcd else None
    if kv_before is not None and kv_after is not None:
        by_method = {m: n - kv_before.get(m, 0) for m, n in kv_after.items()}
        observer = (tracker.reads if tracker else 0) - reads_before
        phase.extra["etcd_kv_requests_by_method"] = by_method
        phase.extra["etcd_kv_requests_of_the_observer"] = observer
        phase.extra["etcd_kv_requests_in_window"] = sum(by_method.values()) - observer
    phase.window_s = round(time.monotonic() - started, 1)
    pids = [pid for name, group in servers.items() if name != "etcd" for pid in group]
    phase.rss_after_kib = sum(harness.rss_kib(pid) for pid in pids)
    swarm_kib = sum(harness.rss_kib(pid) for pid in swarms.pids)
    phase.extra["swarm_rss_per_agent_kib"] = round(swarm_kib / max(1, swarms.agents), 1)
    lags = [lag for d in after for lag in d["lags_ms"]]
    phase.lags = harness.summary(lags, digits=2)
    phase.acked = sum(d["acked"] for d in after) - sum(d["acked"] for d in before)
    phase.connected = sum(d["connected"] for d in after)
    phase.reconnects = sum(d["connects"] for d in after) - sum(d["agents"] for d in after)
    if swarms.missing:
        phase.extra["swarms_not_answering"] = sorted(swarms.missing)
    if args.profile:
        say(f"{phase.name}: py-spy samples for {args.profile:.0f} s (after the window)")
        named = {
            f"{name}-{k}": pid
            for name, group in servers.items()
            if name != "etcd"
            for k, pid in enumerate(group, 1)
        }
        where = args.state / "profile" / phase.name
        phase.extra["profile"] = profiling.sample(named, args.profile, where)


def profile_herd(
    args: argparse.Namespace, pids: dict[str, int]
) -> concurrent.futures.Future[dict[str, dict[str, Any]]] | None:
    """With ``--profile``: py-spy on the brokers from the moment the herd is let go (a
    thread of its own; the herd's figures are timed by the brokers' own verdicts)."""
    if not args.profile:
        return None
    pool = concurrent.futures.ThreadPoolExecutor(1)
    where = args.state / "profile" / "herd"
    # started a moment before the herd is let go, so it sees the first handshakes
    future = pool.submit(profiling.sample, pids, args.profile + 1, where)
    pool.shutdown(wait=False)
    time.sleep(1)
    return future


def idle_cpu(pids: list[int], seconds: float = 5.0) -> float:
    """CPU of ``pids`` with no agent connected (% of one core): what is not per heartbeat."""
    window = harness.CpuWindow({"idle": pids})
    window.start()
    time.sleep(seconds)
    return window.stop()["idle"]


def raw_phase(fed: Federation, sites: list[str], state: Path, args: argparse.Namespace) -> Phase:
    phase = Phase("baseline")
    swarms: fleet.Swarms | None = None
    servers = fleet.RawServers(fed, args.replicas, args.heartbeat, state / "logs")
    try:
        phase.rss_before_kib = sum(harness.rss_kib(pid) for pid in servers.pids)
        phase.idle_cpu = idle_cpu(servers.pids)
        # the federation's own agent settings, pointed at the bare servers
        configs = [
            fleet.agent_config(fed, site, state / "raw-agents", args.session, servers.addresses)
            for site in sites
        ]
        say(f"baseline: {len(sites)} agents → {args.replicas} bare mTLS server(s)")
        groups = fleet.groups_of(configs, args.processes)
        swarms = fleet.Swarms("raw-swarm", groups, state, hold=True, nice=args.agents_nice)
        t0 = swarms.go()
        phase.extra["swarm_build_s"] = swarms.built_s
        try:
            phase.herd_s = round(servers.wait_streams(len(sites), args.herd_timeout) - t0, 2)
            phase.herd_how = "the servers hold every stream"
            say(f"baseline: all {len(sites)} streams up after {phase.herd_s} s")
        except TimeoutError as exc:
            phase.herd_how = f"NOT REACHED after {args.herd_timeout:.0f} s ({exc})"
            say(f"baseline: {phase.herd_how}")
        measure(phase, swarms, {"server": servers.pids}, args)
    finally:
        if swarms is not None:
            swarms.stop()
        servers.stop()
    return phase


def herd(
    phase: Phase,
    swarms: fleet.Swarms,
    tracker: harness.UpTracker,
    args: argparse.Namespace,
    t0: float,
) -> bool:
    """Wait for every agent started at once to be UP; False if the herd did not converge."""
    n = swarms.agents
    all_up = tracker.wait_all_up(args.herd_timeout)
    herd = swarms.dump()
    phase.extra["herd"] = fanin_headline.herd_counts(herd, tracker)
    if all_up is None:
        phase.herd_how = (
            f"NOT REACHED in {args.herd_timeout:.0f} s: peak {tracker.peak} UP, "
            f"{tracker.up()} UP at the end, {tracker.downs} UP→DOWN verdicts, "
            f"{tracker.new_terms} leader terms, "
            f"{sum(d['connects'] for d in herd)} stream attempts, "
            f"{sum(d['welcomed'] for d in herd)} welcomed"
        )
        return False
    phase.herd_s = round(all_up - t0, 2)
    phase.herd_how = "newest UP verdict's since_ms"
    phase.extra["herd_leader_terms"] = tracker.new_terms
    counts = phase.extra["herd"]
    say(
        f"Meridian: all {n} UP after {phase.herd_s} s "
        f"({counts['connect_attempts']} stream attempts, "
        f"{counts['refused_busy_or_unavailable']} refused with a retry_after, "
        f"{counts['connect_timeouts']} timed out; "
        f"{tracker.new_terms} leader term(s) seen, {tracker.downs} UP→DOWN)"
    )
    return True


def ramp(
    phase: Phase,
    groups: list[list[Path]],
    tracker: harness.UpTracker,
    args: argparse.Namespace,
    report: harness.Report,
) -> fleet.Swarms:
    """After a herd that did not converge: every site let go DOWN, then the agents started
    again spread over ``--ramp`` seconds."""
    n = sum(len(g) for g in groups)
    if not tracker.wait(lambda: tracker.up() == 0, 60):
        stuck = f"{tracker.up()} sites still UP 60 s after every agent stopped; ramping anyway"
        say(f"Meridian: {stuck}")
        report.trouble.append(stuck)
    tracker.reset()
    say(f"Meridian: {n} agents → {args.replicas} replica(s), spread over {args.ramp:.0f} s")
    t1 = time.time()
    swarms = fleet.Swarms("swarm-ramp", groups, args.state, ramp=args.ramp, nice=args.agents_nice)
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
        say(f"Meridian: all {n} UP after {phase.ramp_s} s")
    return swarms


def meridian_phase(
    fed: Federation,
    sites: list[str],
    state: Path,
    args: argparse.Namespace,
    report: harness.Report,
) -> Phase:
    phase = Phase("Meridian")
    swarms: fleet.Swarms | None = None
    tracker: harness.UpTracker | None = None
    try:
        etcd = fed.start_etcd()
        if args.etcd_nice:
            harness.renice(etcd.pid, args.etcd_nice)
        brokers = [fed.start_broker(name) for name in fed.broker_names()]
        fed.write_records()
        phase.extra["register_s"] = round(fleet.register(fed, sites), 1)
        say(f"Meridian: {len(sites)} sites registered in {phase.extra['register_s']} s")
        time.sleep(2)
        phase.rss_before_kib = sum(harness.rss_kib(b.pid) for b in brokers)
        phase.idle_cpu = idle_cpu([b.pid for b in brokers])
        configs = [fleet.agent_config(fed, site, state / "agents", args.session) for site in sites]
        groups = fleet.groups_of(configs, args.processes)
        root = broker_settings.load(fed.state / "brokers" / "broker-1.toml").etcd.root
        tracker = harness.UpTracker(harness.etcd_client(fed.etcd_settings()), root, sites)
        say(f"Meridian: {len(sites)} agents → {len(brokers)} replica(s), all at once")
        swarms = fleet.Swarms("swarm", groups, state, hold=True, nice=args.agents_nice)
        herd_profile = profile_herd(args, {b.name: b.pid for b in brokers})
        t0 = swarms.go()
        phase.extra["swarm_build_s"] = swarms.built_s
        converged = herd(phase, swarms, tracker, args, t0)
        if herd_profile is not None:
            phase.extra["herd_profile"] = herd_profile.result()
        if not converged:
            say(f"Meridian: {phase.herd_how}; stopping the agents and ramping instead")
            report.trouble.append(f"connect all at once {phase.herd_how}")
            swarms.stop()
            swarms = ramp(phase, groups, tracker, args, report)
        fed.running.update({p.name: p for p in swarms.procs})
        tracker.reset()
        pids = {"broker": [b.pid for b in brokers], "etcd": [etcd.pid]}
        measure(phase, swarms, pids, args, etcd=fed.etcd_settings(), tracker=tracker)
        if args.idle:
            say(f"Meridian: {args.idle:.0f} s more idle, counting UP→DOWN verdicts")
            time.sleep(args.idle)
        phase.extra["idle_s"] = round(args.settle + args.window + args.profile + args.idle, 1)
        phase.extra["broker_log"] = {
            b.name: fanin_headline.log_digest(fed.state / "logs" / f"{b.name}.log") for b in brokers
        }
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
    marginal = {
        raw.name: fanin_headline.cpu_ms_per_heartbeat(
            raw.cpu.get("server", 0.0) - raw.idle_cpu, rate[raw.name]
        ),
        mer.name: fanin_headline.cpu_ms_per_heartbeat(
            mer.cpu.get("broker", 0.0) - mer.idle_cpu, rate[mer.name]
        ),
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
        ["server CPU before any agent dialled (%)", raw.idle_cpu, mer.idle_cpu, None],
        [
            "server CPU per heartbeat above that (ms)",
            marginal[raw.name],
            marginal[mer.name],
            harness.ratio(marginal[mer.name], marginal[raw.name]),
        ],
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
        f"{args.replicas} server process(es); steady window {args.window:.0f} s",
        [
            "",
            f"baseline ({args.replicas} bare mTLS server(s))",
            f"Meridian ({args.replicas} replica(s) + etcd)",
            "Meridian / baseline",
        ],
        rows,
    )
    report.note(
        f"niceness: etcd {args.etcd_nice:+d} (it stands for an etcd cluster on machines of its "
        f"own), agent swarms {args.agents_nice:+d} (both phases), brokers and bare servers 0"
    )
    report.figures["niceness"] = {"etcd": args.etcd_nice, "agents": args.agents_nice}
    if args.broker_setting:
        report.note(f"broker settings: {', '.join(args.broker_setting)} (the rest default)")
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
    for name, digest in (mer.extra.get("broker_log") or {}).items():
        said = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in digest.items() if v)
        report.note(f"{name}'s log over the Meridian phase: {said or 'nothing of note'}")
    observer = mer.extra.get("etcd_kv_requests_of_the_observer")
    report.note(
        f"etcd KV requests in the window exclude the benchmark's own observer "
        f"({observer} Range: it watches the verdicts, so it reads only when its watch breaks)"
    )
    for p in phases:
        if p.extra.get("swarms_not_answering"):
            missing = p.extra["swarms_not_answering"]
            report.trouble.append(f"{p.name}: swarms not answering a dump: {missing}")
    profiles = [(p.name, p.extra.get("profile") or {}) for p in phases]
    profiles.append(("Meridian herd", mer.extra.get("herd_profile") or {}))
    for label, profile in profiles:
        profiling.report(report, label, profile, args.profile)
    report.note(
        f"after all were connected (idle {mer.extra.get('idle_s')} s, Meridian): "
        f"{mer.extra.get('up_to_down_after_connect')} UP→DOWN verdicts, "
        f"{mer.extra.get('leader_terms_after_connect')} new leader terms, "
        f"{mer.extra.get('up_at_window_end')}/{n} UP at the end"
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
            "cpu_before_agents_percent": p.idle_cpu,
            "cpu_ms_per_heartbeat_above_idle": marginal[p.name],
            "connected_at_window_end": p.connected,
            "reconnects": p.reconnects,
            **p.extra,
        }

    report.figures.update(
        {
            "agents": n,
            "processes": args.processes,
            "idle_s": mer.extra.get("idle_s"),
            "heartbeat_interval_s": args.heartbeat,
            "down_after_s": args.down_after,
            "ramp_s": args.ramp,
            "cert_issue_s": round(issue_s, 2),
            "meridian": figures(mer, "broker-1"),
            "baseline_raw_server": figures(raw, "rawstream server"),
            **fanin_headline.headline(
                agents=n,
                replicas=args.replicas,
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
    args.state = state
    for item in args.broker_setting:  # the broker processes inherit the environment
        key, _, value = item.partition("=")
        os.environ["MERIDIAN_" + key.upper().replace(".", "__")] = value
    report.figures["broker_settings"] = args.broker_setting
    if args.down_after is None:
        args.down_after = 3 * args.heartbeat
    fed = Federation(
        state=state / "fed",
        brokers=args.replicas,
        heartbeat_interval=args.heartbeat,
        down_after=args.down_after,
    )
    fed.prepare()
    sites = [f"edge-{i:05d}" for i in range(1, args.agents + 1)]
    issue_s = fleet.issue(fed, sites)
    say(f"{len(sites)} site certificates issued in {issue_s:.1f} s")
    raw = raw_phase(fed, sites, state, args)
    by_client = fanin_clients.each_client(
        fed, args, lambda where: meridian_phase(fed, sites, where, args, report)
    )
    main_client = EtcdSettings().client if EtcdSettings().client in by_client else args.clients[0]
    summarize(report, [raw, by_client[main_client]], args, issue_s)
    fanin_clients.compare(report, raw, by_client, args.agents)


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
        "--replicas", type=int, default=1, help="broker replicas, and bare servers (default 1)"
    )
    parser.add_argument(
        "--down-after",
        type=float,
        default=None,
        help="silence bound in s (default: three heartbeats)",
    )
    parser.add_argument(
        "--session",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an agent [session] setting for every agent of both phases, e.g. "
        "connect_timeout=60 (default: the agents' own defaults)",
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        help="after each window, sample the servers with py-spy for this many s (default 0)",
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=0.0,
        help="Meridian: idle this many s more after the window, counting false DOWNs",
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
    parser.add_argument(
        "--clients",
        nargs="+",
        choices=sorted(CLIENTS),
        default=None,
        help="the etcd clients whose Meridian phase runs (default: both, threaded first); "
        "one client halves a large run",
    )
    parser.add_argument(
        "--broker-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a broker setting for every replica, e.g. gateway.lease_ttl=10 (the settings' "
        "MERIDIAN_ environment overlay; default: the brokers' own defaults)",
    )
    parser.add_argument(
        "--etcd-nice",
        type=int,
        default=-10,
        help="etcd's niceness (default -10: it stands for a cluster of its own machines, "
        "not a process sharing 2 cores with 10,000 agents; 0 to share equally)",
    )
    parser.add_argument(
        "--agents-nice",
        type=int,
        default=0,
        help="the swarm processes' niceness, both phases (default 0; they stand for "
        "the sites' own machines)",
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
