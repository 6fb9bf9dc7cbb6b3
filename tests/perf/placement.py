"""Placement benchmark: the decision, its commit, and the user's path through the API.

Run: ``python -m tests.perf.placement [--quick] [--sites 1000] [--hosts 50] ...``
(``--help`` lists every flag). It measures, in one run:

1. decisions in one process on a snapshot of ``--sites`` sites x ``--hosts`` hosts (2 NUMA
   cells each), the sample VNFs mixed: each timed wall-clock from the call to the plan
   until its claims are applied to the snapshot (the federation fills up as it would);
2. the decision plus its fenced etcd commit (claims, placement and every desired object
   in one transaction) on a real etcd started for the run, beside the baseline: a raw
   etcd compare-and-put transaction (and one of the commit's shape), the floor of (2);
   (2) and its baselines run once per etcd client (``threaded``, ``async``: see
   ``broker.store.client``), side by side on the same etcd; the top-level figures are the
   default client's;
3. the user's path (``placement_api``): a live local federation of ``--sites`` sim sites
   (real etcd, one broker, sim agents over mTLS), ``POST /v1/vnfs?dry_run=true`` of the
   mix at concurrency 1 and 8 with keep-alive clients;
4. the peer, like for like: real OpenStack Placement ``GET /allocation_candidates`` over
   HTTP (keep-alive) beside Meridian's dry-run over HTTP for the same one-member ask, the
   same number of requests, over the same hosts (the inventories the first
   ``--peer-sites`` sites reported, loaded into a private Placement). If the peer cannot
   run, the benchmark fails.

Percentiles are nearest-rank. It prints a table and, as its last line, one JSON object
with every figure (``decisions_per_s``, ``decision_p99_ms``, ``api_dry_run_per_s``,
``api_dry_run_p99_ms``, ``meridian_vs_placement``, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import Any

from broker.models import vnf as model
from broker.placement import commit, render
from broker.placement.plan import Planner
from broker.placement.snapshot import Snapshot
from broker.settings import EtcdSettings
from broker.store import keys
from broker.store.client import CLIENTS, EtcdClient
from broker.store.protocol import Compare, Op, Put, Target
from tests.perf import harness, placement_api
from tests.support import etcd as etcd_support
from tests.support import placement as P
from tests.support.placement import CellShape, SiteDef

SAMPLES = ("vfirewall", "vepc-upf", "vims")
METROS = 20
SHAPE = CellShape(
    cpus=48, pcpus=40, memory_mb=98304, pages_2m=4096, pages_1g=64, vfs={"physnet1": 64}
)


def federation(n_sites: int, hosts: int) -> tuple[list[SiteDef], list[tuple[str, str, float]]]:
    sites = [
        SiteDef(
            f"site-{i:04d}",
            f"region-{i % 3 + 1}",
            hosts=hosts,
            shapes=(SHAPE, SHAPE),
            labels={"location": f"metro-{i % METROS}", "cost": str(1 + i % 5)},
        )
        for i in range(n_sites)
    ]
    latency = [("metro-paris", f"metro-{m}", 5.0 + 2 * m) for m in range(METROS)]
    latency += [
        (f"metro-{a}", f"metro-{b}", 3.0 * abs(a - b) + 4)
        for a in range(METROS)
        for b in range(a + 1, METROS)
    ]
    latency += [(f"metro-{m}", f"metro-{m}", 2.0) for m in range(METROS)]
    return sites, latency


def pct(values: list[float], q: float) -> float:
    """Nearest rank, ``q`` in 0..1 (the p99 of 10 values is the largest)."""
    return harness.percentile(values, q * 100) if values else 0.0


def decisions(snap: Snapshot, descs: list[model.Descriptor], n: int) -> dict[str, Any]:
    planner = Planner()
    times: list[float] = []
    infeasible = 0
    start = time.perf_counter()
    for i in range(n):
        desc = descs[i % len(descs)]
        t0 = time.perf_counter()
        result = planner.plan(snap, desc, f"bench-{i}")
        if result.feasible:
            for a in result.assignments:  # the federation fills up as it would
                snap.add_claims(snap.sites[a.site], [a.claim], snap.revision + 1)
        else:
            infeasible += 1
        times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    return {
        "n": n,
        "per_s": n / wall,
        "p50_ms": pct(times, 0.5) * 1e3,
        "p99_ms": pct(times, 0.99) * 1e3,
        "infeasible": infeasible,
        "wall_s": wall,
    }


async def with_commit(
    store: EtcdClient, descs: list[model.Descriptor], n: int, tag: str = "c"
) -> dict[str, Any]:
    await store.put(keys.LEADER, b"bench")
    leader = await store.get(keys.LEADER)
    assert leader is not None
    fence = leader.create_revision
    snap = await Snapshot.load(store)
    gc.freeze()
    planner = Planner()
    times: list[float] = []
    conflicts = 0
    for i in range(n):
        desc, name = descs[i % len(descs)], f"{tag}{i}"
        t0 = time.perf_counter()
        for _ in range(10):
            result = planner.plan(snap, desc, name)
            if not result.feasible:
                break
            ops = [o.put() for o in render.objects(name, desc, result.assignments)]
            ops.append(Put(keys.placement(name), b"{}"))
            if (await commit.commit(store, fence, snap, result, ops)).landed:
                break
            conflicts += 1
        times.append(time.perf_counter() - t0)
    return {
        "n": n,
        "per_s": n / sum(times),
        "p50_ms": pct(times, 0.5) * 1e3,
        "p99_ms": pct(times, 0.99) * 1e3,
        "conflicts": conflicts,
    }


def commit_shape(descs: list[model.Descriptor]) -> tuple[int, int]:
    """Puts and value bytes of an average commit of the mix (desired objects + claims)."""
    snap = P.world(*federation(20, 10))
    planner = Planner()
    puts = size = 0
    for i, desc in enumerate(descs):
        result = planner.plan(snap, desc, f"shape-{i}")
        objs = [o.put() for o in render.objects(f"shape-{i}", desc, result.assignments)]
        sites = {a.site for a in result.assignments}
        puts += len(objs) + len(sites) + 1
        size += sum(len(o.value) for o in objs) + 600 * len(sites)
    return puts // len(descs), size // len(descs)


async def raw_etcd(store: EtcdClient, n: int, puts: int = 1, size: int = 512) -> dict[str, Any]:
    """``n`` compare-and-put txns of ``puts`` keys holding ``size`` bytes in all."""
    times: list[float] = []
    rev = 0
    value = b"x" * max(1, size // puts)
    for i in range(n):
        t0 = time.perf_counter()
        key = f"bench/raw/{i % 16}"
        ops = [Put(f"{key}/{j}", value) for j in range(puts)]
        res = await store.txn([Compare(key + "/0", Target.MOD, Op.GREATER, -1)], ops)
        rev = res.revision
        times.append(time.perf_counter() - t0)
    return {
        "n": n,
        "per_s": n / sum(times),
        "p50_ms": pct(times, 0.5) * 1e3,
        "p99_ms": pct(times, 0.99) * 1e3,
        "last_revision": rev,
    }


def single_member(desc: model.Descriptor) -> model.Descriptor:
    """``desc``'s first VDU as one member: the request Placement can be asked too."""
    vdu = desc.vdus[0].model_copy(update={"redundancy": model.Redundancy(), "anti_affinity": None})
    return desc.model_copy(update={"vdus": [vdu], "anti_affinity": []})


async def etcd_part(
    sites: list[SiteDef],
    latency: list[tuple[str, str, float]],
    descs: list[model.Descriptor],
    commits: int,
) -> dict[str, Any]:
    cluster = etcd_support.start_single()
    settings = cluster.settings(root="/meridian-bench/")
    try:
        store = CLIENTS[settings.client].from_settings(settings)
        try:
            t0 = time.perf_counter()
            await P.seed_store(store, sites, latency)
            seeded = time.perf_counter() - t0
        finally:
            await store.close()
        puts, size = commit_shape(descs)
        clients = {  # threaded, then async, on the same seeded etcd
            name: await client_part(settings, name, descs, commits, puts, size)
            for name in sorted(CLIENTS, reverse=True)
        }
        return {"seed_s": seeded, **clients[settings.client], "clients": clients}
    finally:
        cluster.cleanup()


async def client_part(
    settings: EtcdSettings,
    client: str,
    descs: list[model.Descriptor],
    commits: int,
    puts: int,
    size: int,
) -> dict[str, Any]:
    """(2) and its baselines through one etcd client."""
    store = CLIENTS[client].from_settings(settings)
    try:
        raw = await raw_etcd(store, commits)
        same = await raw_etcd(store, commits, puts, size)
        same.update(puts=puts, bytes=size)
        placed = await with_commit(store, descs, commits, tag=f"{client}-")
        return {"raw": raw, "raw_same": same, "commit": placed}
    finally:
        await store.close()


def row(name: str, figures: dict[str, Any]) -> str:
    return (
        f"{name:<44} {figures.get('n', 0):>6} {figures.get('per_s', 0):>10.0f} "
        f"{figures.get('p50_ms', 0):>9.3f} {figures.get('p99_ms', 0):>9.3f}"
    )


def in_process(args: argparse.Namespace, descs: list[model.Descriptor]) -> dict[str, Any]:
    """(1) and (2): decisions on an in-memory snapshot, then with their etcd commit."""
    sites, latency = federation(args.sites, args.hosts)
    say(f"building a snapshot of {args.sites} sites x {args.hosts} hosts x 2 NUMA cells ...")
    t0 = time.perf_counter()
    snap = P.world(sites, latency)
    built = time.perf_counter() - t0
    gc.freeze()  # as the controller does: the long-lived snapshot leaves the GC's scans
    decided = decisions(snap, descs, args.decisions)
    del snap
    gc.unfreeze()
    gc.collect()
    say("starting etcd for the commit figures ...")
    with_etcd = asyncio.run(etcd_part(sites, latency, descs, args.commits))
    return {"snapshot_build_s": built, "decision": decided, **with_etcd}


def live(args: argparse.Namespace, descs: list[model.Descriptor], state: Path) -> dict[str, Any]:
    """(3) and (4) on a live federation; raises when the peer cannot be measured."""
    fed, names = placement_api.start(state, args.live_sites, args.processes)
    try:
        first = names[: args.peer_sites]
        grown = fed.grow(first, args.up_timeout)
        say(f"{len(first)} sites UP in {grown:.0f} s; the peer, like for like ...")
        pair = placement_api.peer_pair(fed, single_member(descs[0]), args.peer_requests)
        say(
            f"like for like over {pair['hosts']} hosts: Meridian dry run "
            f"{pair['meridian']['per_s']:.1f}/s (p99 {pair['meridian']['p99_ms']:.1f} ms), "
            f"Placement {pair['placement']['per_s']:.1f}/s (p99 "
            f"{pair['placement']['p99_ms']:.1f} ms): {pair['meridian_vs_placement']:.2f}x"
        )
        grown = fed.grow(names[args.peer_sites :], args.up_timeout, ramp=args.ramp)
        say(f"{len(names)} sites UP ({grown:.0f} s more); dry runs through the API ...")
        c1 = placement_api.dry_runs(fed, descs, args.requests, 1)
        c8 = placement_api.dry_runs(fed, descs, args.requests, 8)
    finally:
        fed.stop()
    return {"peer": pair, "api_c1": c1, "api_c8": c8}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def report(
    rep: harness.Report, args: argparse.Namespace, part: dict[str, Any], api: dict[str, Any]
) -> None:
    decided, placed = part["decision"], part["commit"]
    raw, same = part["raw"], part["raw_same"]
    pair = api["peer"]
    rows = [("decision incl. claims applied (in memory)", decided)]
    for client, got in part["clients"].items():
        rows += [
            (f"{client}: decision + fenced etcd commit", got["commit"]),
            (f"{client}: baseline: raw etcd compare-and-put txn", got["raw"]),
            (f"{client}: baseline: raw txn of {same['puts']} puts, {same['bytes']} B",
             got["raw_same"]),
        ]
    rows += [
        (f"API dry run, {args.live_sites} live sites, concurrency 1", api["api_c1"]),
        (f"API dry run, {args.live_sites} live sites, concurrency 8", api["api_c8"]),
        (f"like for like: Meridian dry run, {pair['hosts']} hosts", pair["meridian"]),
        (f"like for like: Placement candidates, {pair['hosts']} hosts", pair["placement"]),
    ]
    rep.table(
        f"placement: {args.sites} sites x {args.hosts} hosts in memory; {args.live_sites} "
        f"live sim sites; mix {', '.join(SAMPLES)}",
        ["measure", "n", "per s", "p50 ms", "p99 ms"],
        [
            (name, f["n"], f"{f['per_s']:.0f}", f"{f['p50_ms']:.3f}", f"{f['p99_ms']:.3f}")
            for name, f in rows
        ],
    )
    ratio = placed["per_s"] / raw["per_s"]
    rep.note(
        f"infeasible decisions: {decided['infeasible']} of {decided['n']}; commit conflicts: "
        f"{placed['conflicts']}; commit rate / raw etcd txn rate: {ratio:.2f} "
        f"({EtcdSettings().client} client, the default)"
    )
    by_client = {
        client: got["commit"]["per_s"] for client, got in part["clients"].items()
    }
    async_vs_threaded = harness.ratio(by_client["async"], by_client["threaded"])
    rep.note(
        "commit rate by client: "
        + ", ".join(f"{c} {r:.0f}/s" for c, r in by_client.items())
        + f"; async / threaded = {async_vs_threaded}"
    )
    rep.note(
        f"like for like, keep-alive HTTP, concurrency 1, {pair['hosts']} hosts of "
        f"{pair['sites']} sites: Meridian dry run / Placement allocation_candidates = "
        f"{pair['meridian_vs_placement']:.2f}x (Placement found "
        f"{pair['placement']['candidates']} candidates; loaded in "
        f"{pair['placement']['load_s']:.0f} s)"
    )
    load = harness.machine()["loadavg"]
    rep.note(
        f"load average (1, 5, 15 min) at the start {rep.figures['machine_start']['loadavg']}, "
        f"at the end {load}: the machine is shared, read the ratios"
    )
    rep.figures.update(
        {
            "decisions_per_s": decided["per_s"],
            "decision_p99_ms": decided["p99_ms"],
            "api_dry_run_per_s": api["api_c1"]["per_s"],
            "api_dry_run_p99_ms": api["api_c1"]["p99_ms"],
            "api_dry_run_c8_per_s": api["api_c8"]["per_s"],
            "api_dry_run_c8_p99_ms": api["api_c8"]["p99_ms"],
            "meridian_vs_placement": pair["meridian_vs_placement"],
            "commit_vs_raw_etcd": ratio,
            "commit_vs_raw_same_shape": placed["per_s"] / same["per_s"],
            "etcd_client": EtcdSettings().client,
            "commit_per_s_by_client": by_client,
            "commit_async_vs_threaded": async_vs_threaded,
            "in_process": part,
            "api": api,
            "args": vars(args),
        }
    )
    rep.emit()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.placement", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sites", type=int, default=1000, help="in-memory sites (1000)")
    parser.add_argument("--hosts", type=int, default=50, help="hosts per in-memory site (50)")
    parser.add_argument("--decisions", type=int, default=3000, help="in-memory decisions")
    parser.add_argument("--commits", type=int, default=300, help="decisions with commit")
    parser.add_argument("--live-sites", type=int, default=1000, help="live sim sites (1000)")
    parser.add_argument("--processes", type=int, default=8, help="agent swarm processes (8)")
    parser.add_argument("--requests", type=int, default=100, help="dry runs per concurrency")
    parser.add_argument(
        "--peer-sites",
        type=int,
        default=50,
        help="live sites whose hosts Placement is loaded with (50 sites: 200 hosts)",
    )
    parser.add_argument("--peer-requests", type=int, default=100, help="requests per side")
    parser.add_argument("--up-timeout", type=float, default=300.0, help="s for sites to be UP")
    parser.add_argument(
        "--ramp", type=float, default=60.0, help="s over which the rest of the agents start"
    )
    harness.common_args(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.sites, args.hosts, args.decisions, args.commits = 100, 20, 500, 50
        args.live_sites, args.peer_sites = min(args.live_sites, 60), min(args.peer_sites, 10)
        args.requests, args.peer_requests = min(args.requests, 30), min(args.peer_requests, 30)
        args.processes, args.ramp = min(args.processes, 2), min(args.ramp, 5.0)
    if not 0 < args.peer_sites < args.live_sites:
        parser.error("--peer-sites must be between 1 and --live-sites - 1")
    rep = harness.Report("placement")  # notes the load average at the start
    descs = [P.sample(n) for n in SAMPLES]
    part = in_process(args, descs)
    with harness.state_dir("placement", args.keep_state) as state:
        api = live(args, descs, state)
    report(rep, args, part, api)


if __name__ == "__main__":
    main()
