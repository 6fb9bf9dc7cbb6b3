"""Detection: agent kill -9 → site DOWN event; a silent agent (SIGSTOP) → DOWN; and no
false DOWN among idle agents.

Trials: a probe agent (its own process) is killed with SIGKILL at t0; the figure is the
``at_ms`` of the ``site.down`` event the leader writes for it, minus t0. Both are
``time.time()`` of this one machine (the broker stamps ``at_ms`` just before its fenced
transaction). The agent is restarted and the next trial uses another probe, so no trial
waits for a restart.

Baseline, interleaved trial by trial: a bare grpc.aio mTLS server and a tiny client
(``tests.perf.rawstream``, the federation's own CA and certificates); the client is
killed with SIGKILL and the figure is the time the server's stream handler learns the
peer is gone. That is the floor: Meridian's path adds the gateway clearing the site's
status record in etcd, the leader's watch seeing it, and the fenced verdict.

The silent path, ``--silent-trials`` trials: a probe agent is frozen with SIGSTOP at t0 —
its process keeps its sockets, so the stream stays open and nothing tells the broker but
the missing heartbeats — and the figure is the ``at_ms`` of its ``site.down`` event minus
t0; then SIGCONT, and the agent must come back UP before the next trial. Its reference is
the configured silence bound (``down_after``), counted from the last heartbeat (up to one
heartbeat interval before the SIGSTOP, so a figure a little under the bound is expected);
the target is that bound plus one sweep interval plus the kill -9 target.

False-DOWN check: ``--idle-agents`` agents (swarm processes of ``--per-process``) left
alone for ``--idle-seconds`` (10 minutes by default); every ``site.down`` event for them
is a false one and the count must be 0. Also counted: streams re-established (a changed
session id) -- not a DOWN, but worth knowing.
"""

from __future__ import annotations

import argparse
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from broker import settings as broker_settings
from broker.devfed.federation import Federation
from siteagent import settings as agent_settings
from tests.perf import harness
from tests.perf.harness import Helper, say

TARGET_P99_MS = 1000


@dataclass
class Trial:
    site: str
    held_by: str
    judged_by: str
    detect_ms: float
    floor_ms: float = 0.0
    how: str = ""


class Bench:
    def __init__(self, fed: Federation, state: Path, probes: int) -> None:
        self.fed = fed
        # spread over the replicas: streams held by the leader and by followers alike
        self.probes = harness.spread_sites("probe", probes, fed.brokers)
        self.raw_sites = [f"raw-{i}" for i in range(1, probes + 1)]
        self.state = state
        self.server: Helper | None = None
        self.clients: dict[str, Helper] = {}
        self.raw_address = ""

    # -- Meridian -------------------------------------------------------------------

    def site(self, site: str) -> dict[str, Any]:
        return self.fed.api_get(f"/v1/sites/{site}")  # type: ignore[no-any-return]

    def downs(self, site: str, since_ms: int) -> list[dict[str, Any]]:
        events = self.fed.api_get(f"/v1/events?subject={site}&limit=20", timeout=2.0)["events"]
        return [e for e in events if e["kind"] == "site.down" and e["at_ms"] >= since_ms]

    def meridian_trial(self, site: str, sig: signal.Signals = signal.SIGKILL) -> Trial:
        """``sig`` to the site's agent at t0 → the site's site.down event. SIGKILL ends
        the stream (the agent is restarted after); SIGSTOP leaves it open and silent (the
        agent is continued after)."""
        row = harness.wait_for(lambda: self._up(site), 120, f"{site} UP")
        t0 = time.time()
        self.fed.kill(f"agent-{site}", sig)
        try:
            found = harness.wait_for(
                lambda: self.downs(site, int(t0 * 1000)), 120, f"site.down for {site} ({sig.name})",
                every=0.05,
            )
        finally:
            if sig == signal.SIGSTOP:
                self.fed.kill(f"agent-{site}", signal.SIGCONT)
        if sig == signal.SIGKILL:
            self.fed.start_agents([site])
        event = found[0]
        return Trial(
            site=site,
            held_by=row["status"]["replica"],
            judged_by=event["replica"],
            detect_ms=round(event["at_ms"] - t0 * 1000, 1),
            how=event.get("message", ""),
        )

    def _up(self, site: str) -> dict[str, Any] | None:
        row = self.site(site)
        return row if row["health"]["state"] == "UP" and row["status"] else None

    # -- the raw stream ---------------------------------------------------------------

    def start_raw(self) -> None:
        pki = self.fed.pki
        self.fed.issue_sites(self.raw_sites)
        port = harness.free_port()
        self.raw_address = f"127.0.0.1:{port}"
        self.server = Helper(
            "raw-server",
            harness.python_module(
                "tests.perf.rawstream", "server", "--listen", self.raw_address,
                "--ca", str(pki.ca_cert), "--cert", str(pki.broker_cert("broker-1")),
                "--key", str(pki.broker_key("broker-1")),
                "--heartbeat-ms", str(int(self.fed.heartbeat_interval * 1000)),
            ),
            self.state / "raw" / "server.log",
        )
        self.server.expect(lambda line: line["event"] == "listening", 30)
        for site in self.raw_sites:
            self.clients[site] = self._client(site)

    def _client(self, site: str) -> Helper:
        pki = self.fed.pki
        return Helper(
            site,
            harness.python_module(
                "tests.perf.rawstream", "client", "--target", self.raw_address, "--site", site,
                "--ca", str(pki.ca_cert), "--cert", str(pki.site_cert(site)),
                "--key", str(pki.site_key(site)),
                "--interval", str(self.fed.heartbeat_interval),
            ),
            self.state / "raw" / f"{site}.log",
        )

    def raw_trial(self, site: str) -> float:
        assert self.server is not None
        client = self.clients[site]
        client.expect(lambda line: line["event"] == "ready", 60)
        t0 = client.kill()
        client.stop()
        end = self.server.expect(
            lambda line: line["event"] == "end" and line["site"] == site, 30
        )
        self.clients[site] = self._client(site)
        return round((float(end["t"]) - t0) * 1000, 1)

    def stop_raw(self) -> None:
        for client in self.clients.values():
            client.stop()
        if self.server is not None:
            self.server.stop()


def idle_phase(
    fed: Federation, count: int, per_process: int, seconds: float
) -> dict[str, Any]:
    sites = [f"idle-{i:03d}" for i in range(1, count + 1)]
    say(f"idle phase: {count} agents in processes of {per_process}")
    fed.issue_sites(sites)
    fed.register_sites(sites)
    started = fed.start_agents(sites, per_process=per_process)
    states = fed.wait_all_up(sites, timeout=300)
    not_up = [s for s in sites if states.get(s) != "UP"]
    if not_up:
        raise RuntimeError(f"{len(not_up)} idle agents never came UP: {not_up[:5]}...")

    def sessions() -> dict[str, str | None]:
        return {
            s: (fed.api_get(f"/v1/sites/{s}")["status"] or {}).get("session_id") for s in sites
        }

    before = sessions()
    since = harness.now_ms()
    began = time.monotonic()
    say(f"all {count} UP; leaving them alone for {seconds:.0f} s")

    def false_downs() -> list[dict[str, Any]]:
        events = fed.api_get("/v1/events?limit=1000", timeout=5.0)["events"]
        wanted = set(sites)
        return [
            e for e in events
            if e["kind"] == "site.down" and e["subject"] in wanted and e["at_ms"] >= since
        ]

    while (left := seconds - (time.monotonic() - began)) > 0:
        time.sleep(min(60.0, left))
        dead = [p.name for p in started if not p.alive()]
        if dead:
            raise RuntimeError(f"agent processes died during the idle phase: {dead}")
        say(f"  {time.monotonic() - began:.0f}/{seconds:.0f} s: "
            f"{len(false_downs())} site.down so far")
    downs = false_downs()
    after = sessions()
    return {
        "agents": count,
        "per_process": per_process,
        "idle_seconds": seconds,
        "site_down_events": len(downs),
        "site_down_subjects": sorted({e["subject"] for e in downs}),
        "streams_reestablished": sum(1 for s in sites if before[s] != after[s]),
    }


def run(args: argparse.Namespace, state: Path, report: harness.Report) -> None:
    fed = Federation(
        state=state / "fed", brokers=args.brokers,
        heartbeat_interval=args.heartbeat, down_after=args.down_after,
    )
    bench = Bench(fed, state, args.probes)
    try:
        say(f"federation: etcd, {args.brokers} replicas, {args.probes} probe agents; "
            "raw mTLS server and clients")
        fed.up(bench.probes, per_process=1)
        fed.write_records()
        states = fed.wait_all_up(bench.probes, timeout=120)
        if any(states.get(s) != "UP" for s in bench.probes):
            raise RuntimeError(f"not every probe came UP: {states}")
        bench.start_raw()
        loaded = broker_settings.load(fed.state / "brokers" / "broker-1.toml")
        agent = agent_settings.load(fed.agent_config(bench.probes[0]))
        trials: list[Trial] = []
        for i in range(args.trials):
            trial = bench.meridian_trial(bench.probes[i % len(bench.probes)])
            trial.floor_ms = bench.raw_trial(bench.raw_sites[i % len(bench.raw_sites)])
            trials.append(trial)
            say(f"trial {i + 1}/{args.trials}: {trial.site} DOWN after {trial.detect_ms:.0f} ms "
                f"(held by {trial.held_by}, judged by {trial.judged_by}); "
                f"raw stream end after {trial.floor_ms:.0f} ms")
        bench.stop_raw()
        silent: list[Trial] = []
        for i in range(args.silent_trials):
            trial = bench.meridian_trial(bench.probes[i % len(bench.probes)], signal.SIGSTOP)
            silent.append(trial)
            say(f"silent trial {i + 1}/{args.silent_trials}: {trial.site} DOWN "
                f"{trial.detect_ms:.0f} ms after SIGSTOP ({trial.how})")
        idle = (
            idle_phase(fed, args.idle_agents, args.per_process, args.idle_seconds)
            if args.idle_seconds > 0 else None
        )
        summarize(report, trials, idle, loaded, agent)
        summarize_silent(report, silent, loaded)
    finally:
        bench.stop_raw()
        fed.down()


def summarize(
    report: harness.Report,
    trials: list[Trial],
    idle: dict[str, Any] | None,
    loaded: broker_settings.BrokerSettings,
    agent: agent_settings.AgentSettings,
) -> None:
    detect = harness.summary([t.detect_ms for t in trials])
    floor = harness.summary([t.floor_ms for t in trials])
    report.table(
        "Detection trials (ms after the agent's kill -9)",
        ["#", "site", "stream held by", "judged by", "site.down at", "raw stream end (floor)"],
        [
            [i, t.site, t.held_by, t.judged_by, t.detect_ms, t.floor_ms]
            for i, t in enumerate(trials, 1)
        ],
    )
    report.table(
        f"Detection, {len(trials)} trials (ms; nearest-rank percentiles)",
        ["", "p50", "p99", "min", "max", "p50 / floor", "p99 / floor"],
        [
            ["Meridian: kill -9 → site.down event", detect["p50"], detect["p99"], detect["min"],
             detect["max"], harness.ratio(detect["p50"], floor["p50"]),
             harness.ratio(detect["p99"], floor["p99"])],
            ["baseline: kill -9 → raw server sees stream end", floor["p50"], floor["p99"],
             floor["min"], floor["max"], 1.0, 1.0],
        ],
    )
    verdict = harness.verdict(detect.get("p99"), TARGET_P99_MS)
    if verdict != "PASS":
        report.trouble.append(f"detection p99 target: {verdict}")
    hb, bound = loaded.gateway.heartbeat_interval, loaded.health.down_after
    report.note(f"target: detection p99 ≤ {TARGET_P99_MS} ms → {verdict}")
    report.note(
        f"heartbeat interval {hb} s, DOWN after {bound} s of silence (sweep every "
        f"{loaded.health.sweep_interval} s); agents give a stream up after "
        f"{agent.session.missed_acks} unacked heartbeats; a closed stream is DOWN at once"
    )
    figures: dict[str, Any] = {
        "definition": "kill -9 of an agent -> at_ms of its site.down event (same clock)",
        "trials": len(trials),
        "heartbeat_interval_s": hb,
        "down_after_s": bound,
        "sweep_interval_s": loaded.health.sweep_interval,
        "agent_missed_acks": agent.session.missed_acks,
        "meridian_detect_ms": detect,
        "baseline_raw_stream_end_ms": floor,
        "ratio_to_floor": {
            "p50": harness.ratio(detect.get("p50"), floor.get("p50")),
            "p99": harness.ratio(detect.get("p99"), floor.get("p99")),
        },
        "target_p99_ms": TARGET_P99_MS,
        "verdict": verdict,
        "per_trial": [asdict(t) for t in trials],
        "false_down": idle,
    }
    if idle is not None:
        ok = "PASS" if idle["site_down_events"] == 0 else "FAIL"
        figures["false_down_verdict"] = ok
        if ok != "PASS":
            report.trouble.append(f"{idle['site_down_events']} false site.down events")
        report.table(
            "False-DOWN check (idle agents)",
            ["agents", "per process", "idle s", "heartbeat s", "DOWN after s",
             "site.down events", "streams re-established", "verdict"],
            [[idle["agents"], idle["per_process"], idle["idle_seconds"], hb, bound,
              idle["site_down_events"], idle["streams_reestablished"], ok]],
        )
    report.figures.update(figures)


def summarize_silent(
    report: harness.Report, trials: list[Trial], loaded: broker_settings.BrokerSettings
) -> None:
    if not trials:
        report.figures["silent"] = None
        return
    detect = harness.summary([t.detect_ms for t in trials])
    bound_ms = loaded.health.down_after * 1000
    target = bound_ms + loaded.health.sweep_interval * 1000 + TARGET_P99_MS
    verdict = harness.verdict(detect.get("p99"), target)
    if verdict != "PASS":
        report.trouble.append(f"silent detection p99 target: {verdict}")
    report.table(
        f"Silent path, {len(trials)} trials: SIGSTOP → site.down (ms; nearest rank)",
        ["", "p50", "p99", "min", "max", "p99 / silence bound", "target p99", "verdict"],
        [
            ["Meridian: SIGSTOP → site.down event", detect["p50"], detect["p99"],
             detect["min"], detect["max"], harness.ratio(detect.get("p99"), bound_ms),
             target, verdict],
            ["reference: silence bound (down_after, from the last heartbeat)",
             bound_ms, bound_ms, bound_ms, bound_ms, 1.0, None, None],
        ],
    )
    report.figures["silent"] = {
        "definition": "SIGSTOP of an agent -> at_ms of its site.down event (same clock)",
        "trials": len(trials),
        "detect_ms": detect,
        "silence_bound_ms": bound_ms,
        "target_p99_ms": target,
        "verdict": verdict,
        "per_trial": [asdict(t) for t in trials],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.detection", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--trials", type=int, default=20, help="kill -9 trials (default 20)")
    parser.add_argument("--probes", type=int, default=4,
                        help="probe agents killed in turn (default 4)")
    parser.add_argument("--brokers", type=int, default=3, help="broker replicas (default 3)")
    parser.add_argument("--heartbeat", type=float, default=Federation.heartbeat_interval,
                        help="heartbeat interval in s (default: the dev federation's)")
    parser.add_argument("--down-after", type=float, default=Federation.down_after,
                        help="silence bound in s (default: the dev federation's)")
    parser.add_argument("--silent-trials", type=int, default=10,
                        help="SIGSTOP trials, the silent path (default 10; 0 skips them)")
    parser.add_argument("--idle-agents", type=int, default=100)
    parser.add_argument("--per-process", type=int, default=25,
                        help="idle agents per swarm process (default 25)")
    parser.add_argument("--idle-seconds", type=float, default=600.0,
                        help="false-DOWN watch in s (default 600; 0 skips it)")
    harness.common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.trials = min(args.trials, 5)
        args.silent_trials = min(args.silent_trials, 3)
        args.idle_seconds = min(args.idle_seconds, 30.0)
    harness.run_reported("detection", args, run)


if __name__ == "__main__":
    main()
