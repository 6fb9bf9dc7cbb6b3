"""Where a held stream's memory goes: a tracemalloc diff per 1,000 sessions on one replica.

One run, the same ``--agents`` sim agents (``tests.perf.swarm``) twice:

1. baseline -- a bare grpc.aio mTLS server (``tests.perf.rawstream server``, the
   gateway's TLS and gRPC options, nothing behind them): its RSS per stream;
2. Meridian -- one broker replica (with etcd) run under tracemalloc
   (``tests.perf.traced_broker``): a snapshot once the sites are registered, another
   once every agent holds its stream and ``--settle`` seconds passed. The diff, grouped by the
   newest frame in Meridian's own code (else the newest frame at all), says which lines
   hold the Python memory of the sessions, per 1,000 of them; RSS per stream beside it
   (what gRPC's C core holds is in RSS only).

``python -m tests.perf.session_memory --agents 1000``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import signal
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx

from broker.devfed import procs
from broker.devfed.federation import Federation
from tests.perf import fleet, harness
from tests.perf.harness import say

OURS = ("/broker/", "/siteagent/", "/meridian/v1/")


def where(trace: tracemalloc.Traceback) -> str:
    """The newest frame in our code, else the newest frame: ``path:line``, shortened."""
    frames = list(trace)  # oldest first
    frame = next((f for f in reversed(frames) if any(o in f.filename for o in OURS)), frames[-1])
    name = frame.filename
    for marker in (*OURS, "/site-packages/", "/python3.11/"):
        if marker in name:
            name = marker.strip("/") + "/" + name.split(marker, 1)[1]
            break
    return f"{name}:{frame.lineno}"


def diff(before: Path, after: Path) -> tuple[int, int, list[tuple[str, int, int]]]:
    """(bytes, blocks, [(where, bytes, blocks)] largest first) grown between snapshots."""
    old = tracemalloc.Snapshot.load(str(before))
    new = tracemalloc.Snapshot.load(str(after))
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = new.filter_traces(ignore).compare_to(old.filter_traces(ignore), "traceback")
    grouped: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for stat in stats:
        cell = grouped[where(stat.traceback)]
        cell[0] += stat.size_diff
        cell[1] += stat.count_diff
    rows = sorted(((k, v[0], v[1]) for k, v in grouped.items()), key=lambda r: -r[1])
    return sum(r[1] for r in rows), sum(r[2] for r in rows), rows


def snapshot(proc: procs.Proc, dumps: Path, k: int) -> Path:
    proc.signal(signal.SIGUSR2)
    harness.wait_for(lambda: (dumps / f"{k}.done").exists(), 300, f"snapshot {k}")
    return dumps / f"{k}.snapshot"


def baseline(fed: Federation, sites: list[str], state: Path, args: argparse.Namespace) -> float:
    """RSS per stream of the bare server, the same agents."""
    servers = fleet.RawServers(fed, 1, args.heartbeat, state / "logs")
    swarms: fleet.Swarms | None = None
    try:
        before = harness.rss_kib(servers.pids[0])
        configs = [
            fleet.agent_config(fed, s, state / "raw-agents", [], servers.addresses) for s in sites
        ]
        swarms = fleet.Swarms(
            "raw-swarm", fleet.groups_of(configs, args.processes), state, hold=True
        )
        t0 = swarms.go()
        up = servers.wait_streams(len(sites), args.up_timeout)
        say(f"baseline: {len(sites)} streams held after {up - t0:.1f} s")
        time.sleep(args.settle)
        return (harness.rss_kib(servers.pids[0]) - before) / len(sites)
    finally:
        if swarms is not None:
            swarms.stop()
        servers.stop()


def healthy(fed: Federation) -> bool:
    try:
        resp = httpx.get(f"{fed.api_url()}/healthz", timeout=1.0, verify=fed.api_verify)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200


def meridian(
    fed: Federation, sites: list[str], state: Path, args: argparse.Namespace
) -> dict[str, Any]:
    dumps = state / "tracemalloc"
    swarms: fleet.Swarms | None = None
    try:
        fed.start_etcd()
        config = fed.broker_config("broker-1")
        argv = harness.python_module(
            "tests.perf.traced_broker", "--config", str(config), "--dump-dir", str(dumps)
        )
        broker = procs.start("broker-1", argv, state / "logs" / "broker-1.log")
        fed.running["broker-1"] = broker
        procs.wait_until(broker, lambda: healthy(fed), timeout=120, what="serving")
        fed.write_records()
        fleet.register(fed, sites)
        time.sleep(2)
        first = snapshot(broker, dumps, 1)
        rss_before = harness.rss_kib(broker.pid)
        configs = [fleet.agent_config(fed, s, state / "agents", []) for s in sites]
        swarms = fleet.Swarms("swarm", fleet.groups_of(configs, args.processes), state, hold=True)
        t0 = time.time()
        swarms.go()
        # every stream held (the agents say so): not the UP verdicts, which a replica this
        # slowed down by tracemalloc may not keep a leader term long enough to give
        deadline = time.monotonic() + args.up_timeout
        while (held := sum(d["connected"] for d in swarms.dump())) < len(sites):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{held} of {len(sites)} streams after {args.up_timeout} s")
            time.sleep(5)
        say(f"Meridian: all {len(sites)} streams held after {time.time() - t0:.1f} s")
        time.sleep(args.settle)
        rss_after = harness.rss_kib(broker.pid)
        second = snapshot(broker, dumps, 2)
        traced, blocks, rows = diff(first, second)
        return {
            "rss_per_site_kib": (rss_after - rss_before) / len(sites),
            "traced_per_site_kib": traced / 1024 / len(sites),
            "blocks_per_site": blocks / len(sites),
            "rows": rows,
        }
    finally:
        if swarms is not None:
            swarms.stop()
        fed.down()


def run(args: argparse.Namespace, state: Path, report: harness.Report) -> None:
    fed = Federation(
        state=state / "fed",
        brokers=1,
        heartbeat_interval=args.heartbeat,
        down_after=3 * args.heartbeat,
    )
    fed.prepare()
    sites = [f"edge-{i:05d}" for i in range(1, args.agents + 1)]
    say(f"{len(sites)} site certificates issued in {fleet.issue(fed, sites):.1f} s")
    bare = baseline(fed, sites, state, args)
    mer = meridian(fed, sites, state, args)
    per_k = 1000 / len(sites)
    report.table(
        f"Memory per held stream: {len(sites)} agents, heartbeat {args.heartbeat} s, one server",
        ["", "baseline (bare mTLS server)", "Meridian (1 replica + etcd)"],
        [
            ["RSS per stream (KiB)", round(bare, 1), round(mer["rss_per_site_kib"], 1)],
            [
                "Python heap per stream, tracemalloc (KiB)",
                None,
                round(mer["traced_per_site_kib"], 1),
            ],
            ["Python blocks per stream", None, round(mer["blocks_per_site"], 1)],
        ],
    )
    rows = mer["rows"][: args.top]
    report.table(
        "Python memory the sessions hold, per 1,000 sessions, by the newest frame in "
        "Meridian's code (else the allocating line)",
        ["where", "KiB per 1,000", "blocks per 1,000"],
        [[w, round(size * per_k / 1024, 1), round(count * per_k)] for w, size, count in rows],
    )
    report.figures.update(
        {
            "agents": len(sites),
            "bare_rss_per_stream_kib": round(bare, 1),
            "rss_per_site_kib": round(mer["rss_per_site_kib"], 1),
            "traced_per_site_kib": round(mer["traced_per_site_kib"], 1),
            "top_per_1000_kib": {w: round(s * per_k / 1024, 1) for w, s, _ in rows},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.session_memory", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--agents", type=int, default=1000, help="sim agents (default 1000)")
    parser.add_argument("--processes", type=int, default=4, help="swarm processes (default 4)")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="heartbeat in s (default 5)")
    parser.add_argument("--settle", type=float, default=10.0, help="s after all are up (10)")
    parser.add_argument("--up-timeout", type=float, default=300.0, help="s for all to be up")
    parser.add_argument("--top", type=int, default=20, help="rows of the breakdown (20)")
    harness.common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.agents = min(args.agents, 200)
        args.processes = min(args.processes, 2)
    harness.run_reported("session_memory", args, run)


if __name__ == "__main__":
    main()
