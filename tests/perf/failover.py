"""Failover: broker leader kill -9 → the new leader's controllers running.

"Running" is observed, not inferred. Before each trial a probe site is made to need a
verdict: its agent (on a replica that is not the leader) is paused with SIGSTOP until
the leader marks it DOWN for silence; then, at t0, the leader is killed with SIGKILL and
the probe is resumed (SIGCONT) in the same instant. Its stream never closed, so its
``sitestatus`` record is live, and the first thing a new leader's site health controller
does is judge it UP -- a fenced transaction (invariant 3). The figure is

    controllers running = (arrival of that fenced write, seen on an etcd watch) - t0

and the write is checked to carry the new leader's name and fence. Alongside it:
``elected`` (the new leader key appears on the watch) and ``API names it`` (a surviving
replica's GET /v1/leader names another replica; polled every 20 ms).

Baseline, interleaved trial by trial on the same etcd: two raw cslab-etcd3 processes
running the bare lease + txn recipe with the same TTL (``tests.perf.rawelection``); the
holder is killed with SIGKILL and the time until the follower's key appears on the same
watch is the physical floor of any lease-based failover.

After every trial the killed replica is restarted and the federation settles.
"""

from __future__ import annotations

import argparse
import functools
import json
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from broker import settings as broker_settings
from broker.settings import EtcdSettings
from broker.devfed.federation import Federation
from broker.store import keys
from tests.perf import harness
from tests.perf.harness import KeyWatch, Seen, say

TARGET_P99_MS = 3000
RAW_KEY = "/perf/election/floor"


@dataclass
class Trial:
    killed: str
    new_leader: str
    probe: str
    fence: int
    expired_ms: float
    elected_ms: float
    api_ms: float
    running_ms: float
    floor_expired_ms: float = 0.0
    floor_ms: float = 0.0


class Bench:
    def __init__(self, fed: Federation, watch: KeyWatch, probes: list[str]) -> None:
        self.fed = fed
        self.watch = watch
        self.probes = probes
        self.names = fed.broker_names()
        loaded = broker_settings.load(fed.state / "brokers" / f"{self.names[0]}.toml")
        self.settings = loaded
        self.root = loaded.etcd.root
        self.http = httpx.Client(
            timeout=1.0, headers={"Authorization": f"Bearer {fed.token}"}, verify=fed.api_verify
        )

    def close(self) -> None:
        self.http.close()

    # -- what the federation says ---------------------------------------------------

    def leader_seen_by(self, broker: str) -> str | None:
        resp = self.http.get(self.fed.api_url(broker) + "/v1/leader")
        return str(resp.json()["leader"]) if resp.status_code == 200 else None

    def site(self, site: str) -> dict[str, Any]:
        return self.fed.api_get(f"/v1/sites/{site}")  # type: ignore[no-any-return]

    def steady(self) -> str:
        """Every replica serves and follows one leader, every probe is UP; the leader."""
        def agreed() -> str | None:
            seen = {self.leader_seen_by(b) for b in self.names}
            return seen.pop() if len(seen) == 1 and None not in seen else None

        leader = harness.wait_for(agreed, 30, "all replicas to agree on a leader")
        for probe in self.probes:
            harness.wait_for(functools.partial(self.is_up, probe), 30, f"{probe} UP")
        return leader

    def is_up(self, site: str) -> bool:
        return bool(self.site(site)["health"]["state"] == "UP")

    def probe_off(self, leader: str) -> str:
        """A probe whose stream is held by a replica other than the leader."""
        for probe in self.probes:
            status = self.site(probe)["status"]
            if status and status["replica"] != leader:
                return probe
        # every probe followed its replica's failures onto the leader: restart one whose
        # first choice is another replica
        index = next(i for i, n in enumerate(self.names) if n != leader)
        probe = self.probes[index]
        say(f"moving {probe} off the leader {leader}")
        self.fed.kill(f"agent-{probe}")
        self.fed.start_agents([probe])

        def placed() -> bool:
            row = self.site(probe)
            status = row["status"]
            return bool(row["health"]["state"] == "UP" and status and status["replica"] != leader)

        harness.wait_for(placed, 30, f"{probe} UP on another replica")
        return probe

    # -- one trial ------------------------------------------------------------------

    def trial(self) -> Trial:
        old = self.steady()
        probe = self.probe_off(old)
        agent = self.fed.running[f"agent-{probe}"]
        survivors = [b for b in self.names if b != old]
        bound = self.settings.health.down_after
        agent.signal(signal.SIGSTOP)
        try:
            harness.wait_for(
                lambda: self.site(probe)["health"]["state"] == "DOWN",
                bound + 10, f"{probe} DOWN while paused", every=0.05,
            )
            mark = self.watch.mark()
            t0 = time.time()
            self.fed.kill(old)
        finally:
            agent.signal(signal.SIGCONT)
        api_at = self._poll_new_leader(survivors, old)
        leader_key = self.root + keys.LEADER
        expired = self.watch.first(mark, lambda s: s.key == leader_key and s.deleted, 30)
        elected = self.watch.first(
            mark, lambda s: s.key == leader_key and not s.deleted, timeout=30
        )
        new = elected.value.decode()
        health_key = self.root + keys.health(probe)

        def by_new_leader(seen: Seen) -> bool:
            if seen.key != health_key or seen.deleted:
                return False
            return bool(json.loads(seen.value).get("decided_by") == new)

        running = self.watch.first(mark, by_new_leader, timeout=30)
        verdict = json.loads(running.value)
        if verdict["fence"] != elected.create_revision or verdict["state"] != "UP":
            raise RuntimeError(f"unexpected first verdict of {new}: {verdict}")
        self.fed.start_broker(old)
        return Trial(
            killed=old,
            new_leader=new,
            probe=probe,
            fence=elected.create_revision,
            expired_ms=round((expired.at - t0) * 1000, 1),
            elected_ms=round((elected.at - t0) * 1000, 1),
            api_ms=round((api_at - t0) * 1000, 1),
            running_ms=round((running.at - t0) * 1000, 1),
        )

    def _poll_new_leader(self, survivors: list[str], old: str) -> float:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for broker in survivors:
                try:
                    seen = self.leader_seen_by(broker)
                except (httpx.HTTPError, ValueError, KeyError):
                    continue
                if seen and seen != old:
                    return time.time()
            time.sleep(0.02)
        raise TimeoutError("no surviving replica named a new leader within 30s")


class Floor:
    """The raw election: a holder and a follower process on the same etcd."""

    def __init__(self, etcd: EtcdSettings, ttl: int, watch: KeyWatch, logs: Path) -> None:
        self.etcd = etcd
        self.ttl = ttl
        self.watch = watch
        self.logs = logs
        self.count = 0
        self.holder = self._spawn()
        self.holder.expect(lambda line: line.get("state") == "leading", 30)

    def _spawn(self) -> harness.Helper:
        self.count += 1
        name = f"raw-{self.count}"
        argv = harness.python_module(
            "tests.perf.rawelection", *harness.etcd_args(self.etcd), "--key", RAW_KEY,
            "--name", name, "--ttl", str(self.ttl),
        )
        return harness.Helper(name, argv, self.logs / f"{name}.log")

    def trial(self) -> tuple[float, float]:
        """(key deleted, follower's key written), in ms after the holder's kill -9."""
        follower = self._spawn()
        follower.expect(lambda line: line.get("state") == "following", 30)
        mark = self.watch.mark()
        t0 = self.holder.kill()
        self.holder.stop()
        expired = self.watch.first(mark, lambda s: s.key == RAW_KEY and s.deleted, 30)
        name = follower.name.encode()
        seen = self.watch.first(
            mark, lambda s: s.key == RAW_KEY and not s.deleted and s.value == name, timeout=30
        )
        follower.expect(lambda line: line.get("state") == "leading", 10)
        self.holder = follower
        return round((expired.at - t0) * 1000, 1), round((seen.at - t0) * 1000, 1)

    def stop(self) -> None:
        self.holder.stop()


def run(args: argparse.Namespace, state: Path, report: harness.Report) -> None:
    fed = Federation(state=state / "fed", brokers=args.brokers)
    probes = harness.spread_sites("probe", args.brokers, args.brokers)
    background = [f"bg-{i:02d}" for i in range(1, args.sites + 1)]
    bench: Bench | None = None
    floor: Floor | None = None
    watch: KeyWatch | None = None
    try:
        say(f"federation: etcd, {args.brokers} replicas, {len(probes)} probe agents, "
            f"{len(background)} background agents")
        fed.up(probes, per_process=1)
        if background:
            fed.issue_sites(background)
            fed.register_sites(background)
            fed.start_agents(background, per_process=3)
        fed.write_records()
        states = fed.wait_all_up(probes + background, timeout=120)
        if any(states.get(s) != "UP" for s in probes + background):
            raise RuntimeError(f"not every site came UP: {states}")
        client = harness.etcd_client(fed.etcd_settings())
        loaded = broker_settings.load(fed.state / "brokers" / "broker-1.toml")
        watch = KeyWatch(
            client,
            [loaded.etcd.root + keys.LEADER, loaded.etcd.root + keys.HEALTH, RAW_KEY],
        )
        bench = Bench(fed, watch, probes)
        ttl = loaded.election.lease_ttl
        floor = Floor(fed.etcd_settings(), ttl, watch, state / "raw")
        trials: list[Trial] = []
        for i in range(1, args.trials + 1):
            trial = bench.trial()
            bench.steady()
            trial.floor_expired_ms, trial.floor_ms = floor.trial()
            trials.append(trial)
            say(f"trial {i}/{args.trials}: killed {trial.killed} → {trial.new_leader}: "
                f"elected {trial.elected_ms:.0f} ms, controllers {trial.running_ms:.0f} ms; "
                f"raw election {trial.floor_ms:.0f} ms")
        summarize(report, trials, ttl, loaded)
    finally:
        if floor is not None:
            floor.stop()
        if watch is not None:
            watch.close()
        if bench is not None:
            bench.close()
        fed.down()


def summarize(
    report: harness.Report, trials: list[Trial], ttl: int, loaded: broker_settings.BrokerSettings
) -> None:
    expired = harness.summary([t.expired_ms for t in trials])
    floor_expired = harness.summary([t.floor_expired_ms for t in trials])
    elected = harness.summary([t.elected_ms for t in trials])
    api = harness.summary([t.api_ms for t in trials])
    running = harness.summary([t.running_ms for t in trials])
    floor = harness.summary([t.floor_ms for t in trials])
    overhead = harness.summary([t.running_ms - t.elected_ms for t in trials])
    report.table(
        "Failover trials (ms after the leader's kill -9)",
        ["#", "killed", "new leader", "lease expired", "elected", "API names it",
         "controllers running", "raw: expired", "raw: elected (floor)"],
        [
            [i, t.killed, t.new_leader, t.expired_ms, t.elected_ms, t.api_ms, t.running_ms,
             t.floor_expired_ms, t.floor_ms]
            for i, t in enumerate(trials, 1)
        ],
    )
    rows = []
    for label, s in (
        ("Meridian: leader's lease expired", expired),
        ("Meridian: new leader elected", elected),
        ("Meridian: a survivor's API names it", api),
        ("Meridian: controllers running", running),
        ("Meridian: running − elected", overhead),
        ("baseline: holder's lease expired", floor_expired),
        ("baseline: raw lease+txn election", floor),
    ):
        rows.append([label, s["p50"], s["p99"], s["min"], s["max"],
                     harness.ratio(s["p50"], floor["p50"]), harness.ratio(s["p99"], floor["p99"])])
    report.table(
        f"Failover, {len(trials)} trials, lease TTL {ttl} s (ms; nearest-rank percentiles)",
        ["", "p50", "p99", "min", "max", "p50 / floor", "p99 / floor"],
        rows,
    )
    verdict = harness.verdict(running.get("p99"), TARGET_P99_MS)
    if verdict != "PASS":
        report.trouble.append(f"failover p99 target: {verdict}")
    report.note(
        "controllers running = the new leader's first fenced controller write (its site "
        "health verdict on a probe site paused until DOWN, resumed at the kill), as it "
        "arrives on an etcd watch; checked to carry the new leader's name and fence."
    )
    report.note(f"target: controllers running p99 ≤ {TARGET_P99_MS} ms → {verdict}")
    report.figures.update(
        {
            "definition": "kill -9 of the leader -> arrival (etcd watch) of the new "
            "leader's first fenced controller write",
            "trials": len(trials),
            "lease_ttl_s": ttl,
            "heartbeat_interval_s": loaded.gateway.heartbeat_interval,
            "down_after_s": loaded.health.down_after,
            "meridian_ms": {"lease_expired": expired, "elected": elected, "api_names_leader": api,
                            "controllers_running": running, "running_minus_elected": overhead},
            "baseline_raw_election_ms": floor,
            "baseline_lease_expired_ms": floor_expired,
            "ratio_running_to_floor": {
                "p50": harness.ratio(running.get("p50"), floor.get("p50")),
                "p99": harness.ratio(running.get("p99"), floor.get("p99")),
            },
            "target_p99_ms": TARGET_P99_MS,
            "verdict": verdict,
            "per_trial": [asdict(t) for t in trials],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.failover", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--trials", type=int, default=10, help="kill -9 trials (default 10)")
    parser.add_argument("--brokers", type=int, default=3, help="broker replicas (default 3)")
    parser.add_argument("--sites", type=int, default=6,
                        help="background agents besides the probes (default 6)")
    harness.common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.trials = min(args.trials, 3)
    harness.run_reported("failover", args, run)


if __name__ == "__main__":
    main()
