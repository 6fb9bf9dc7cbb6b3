"""Placement benchmark: 1,000 sim sites x 50 hosts (2 NUMA cells each), sample VNFs mixed.

Run: ``python -m tests.perf.placement [--sites 1000] [--hosts 50] [--decisions 3000]
[--commits 300] [--peer-hosts 200] [--peer-requests 50]``. It measures

1. the decision alone (checkers → scorers → plan on the in-memory snapshot; each placed
   VNF's claims are applied, so the federation fills up as it would), in one process;
2. the decision plus its fenced etcd commit (claims, placement and every desired object
   in one transaction) on a real etcd started for the run;
3. the baseline in the same run: a raw etcd compare-and-put transaction, the floor of (2);
4. the peer, side by side: real OpenStack Placement ``GET /allocation_candidates`` for the
   one-member vFirewall request over ``--peer-hosts`` hosts (3 resource providers each, in
   a Placement of its own from the minicloud's services venv: ``placement_peer``), beside
   Meridian's decision for the same one-member ask over the same number of hosts. Loading
   providers costs ~0.3 s per host here, so the peer runs at a smaller scale than (1);
   ``--peer-hosts 0`` skips it.

It prints a table and, as its last line, one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from broker.models import vnf as model
from broker.placement import commit, render
from broker.placement.plan import Planner
from broker.placement.snapshot import Snapshot
from broker.store import keys
from broker.store.etcd import EtcdStore
from broker.store.protocol import Compare, Op, Put, Target
from tests.perf import placement_peer
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
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def decisions(snap: Snapshot, descs: list[model.Descriptor], n: int) -> dict[str, Any]:
    planner = Planner()
    times: list[float] = []
    infeasible = 0
    start = time.perf_counter()
    for i in range(n):
        desc = descs[i % len(descs)]
        t0 = time.perf_counter()
        result = planner.plan(snap, desc, f"bench-{i}")
        times.append(time.perf_counter() - t0)
        if not result.feasible:
            infeasible += 1
            continue
        for a in result.assignments:  # the federation fills up as it would
            snap.add_claims(snap.sites[a.site], [a.claim], snap.revision + 1)
    wall = time.perf_counter() - start
    return {
        "n": n,
        "per_s": n / sum(times),
        "p50_ms": pct(times, 0.5) * 1e3,
        "p99_ms": pct(times, 0.99) * 1e3,
        "infeasible": infeasible,
        "wall_s": wall,
    }


async def with_commit(store: EtcdStore, descs: list[model.Descriptor], n: int) -> dict[str, Any]:
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
        desc = descs[i % len(descs)]
        t0 = time.perf_counter()
        for _ in range(10):
            result = planner.plan(snap, desc, f"c{i}")
            if not result.feasible:
                break
            ops = [o.put() for o in render.objects(f"c{i}", desc, result.assignments)]
            ops.append(Put(keys.placement(f"c{i}"), b"{}"))
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


async def raw_etcd(
    store: EtcdStore, n: int, puts: int = 1, size: int = 512
) -> dict[str, Any]:
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


def peer_side(hosts: int, n: int) -> dict[str, Any]:
    """Meridian's decision for the one-member vFirewall ask over ``hosts`` hosts (sites of
    50), without filling: the same question Placement answers, in the same run."""
    per_site = min(50, hosts)
    sites, latency = federation(max(1, hosts // per_site), per_site)
    snap = P.world(sites, latency)
    desc = single_member(P.sample("vfirewall"))
    planner = Planner()
    times: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        result = planner.plan(snap, desc, f"peer-{i}")
        times.append(time.perf_counter() - t0)
        assert result.feasible, result.explain(snap)
    return {"n": n, "hosts": len(sites) * per_site, "per_s": n / sum(times),
            "p50_ms": pct(times, 0.5) * 1e3, "p99_ms": pct(times, 0.99) * 1e3}


def openstack_placement(hosts: int, n: int) -> dict[str, Any]:
    """Real OpenStack Placement ``GET /allocation_candidates`` over ``hosts`` hosts (3
    resource providers each) loaded into a Placement of its own (``placement_peer``)."""
    try:
        venv = placement_peer.services_venv()
    except placement_peer.PeerUnavailable as exc:
        return {"measured": False, "why": str(exc)}
    peer = placement_peer.Placement(venv)
    try:
        peer.start()
        loaded = peer.load(hosts)
        peer.ask(3)  # warm: the first answers pay for imports and caches
        times, found = peer.ask(n)
    finally:
        peer.stop()
    return {"measured": True, "n": n, "hosts": hosts, "providers": hosts * 3,
            "candidates": found, "load_s": loaded, "per_s": n / sum(times),
            "p50_ms": pct(times, 0.5) * 1e3, "p99_ms": pct(times, 0.99) * 1e3,
            "request": placement_peer.REQUEST}


async def etcd_part(
    sites: list[SiteDef],
    latency: list[tuple[str, str, float]],
    descs: list[model.Descriptor],
    commits: int,
) -> dict[str, Any]:
    cluster = etcd_support.start_single()
    try:
        store = EtcdStore.from_settings(cluster.settings(root="/meridian-bench/"))
        try:
            t0 = time.perf_counter()
            await P.seed_store(store, sites, latency)
            seeded = time.perf_counter() - t0
            raw = await raw_etcd(store, commits)
            puts, size = commit_shape(descs)
            same = await raw_etcd(store, commits, puts, size)
            same.update(puts=puts, bytes=size)
            placed = await with_commit(store, descs, commits)
            return {"seed_s": seeded, "raw": raw, "raw_same": same, "commit": placed}
        finally:
            await store.close()
    finally:
        cluster.cleanup()


def row(name: str, figures: dict[str, Any]) -> str:
    return (
        f"{name:<44} {figures.get('n', 0):>6} {figures.get('per_s', 0):>10.0f} "
        f"{figures.get('p50_ms', 0):>9.3f} {figures.get('p99_ms', 0):>9.3f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--decisions", type=int, default=3000)
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--peer-hosts", type=int, default=200)
    parser.add_argument("--peer-requests", type=int, default=50)
    args = parser.parse_args(argv)
    say: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    descs = [P.sample(n) for n in SAMPLES]
    sites, latency = federation(args.sites, args.hosts)
    say(f"building a snapshot of {args.sites} sites x {args.hosts} hosts x 2 NUMA cells ...")
    t0 = time.perf_counter()
    snap = P.world(sites, latency)
    built = time.perf_counter() - t0
    gc.freeze()  # as the controller does: the long-lived snapshot leaves the GC's scans
    decided = decisions(snap, descs, args.decisions)
    say("starting etcd for the commit figures ...")
    with_etcd = asyncio.run(etcd_part(sites, latency, descs, args.commits))
    peer: dict[str, Any] = {"measured": False, "why": "--peer-hosts 0"}
    mine: dict[str, Any] = {}
    if args.peer_hosts > 0:
        say(f"loading {args.peer_hosts} hosts into a private OpenStack Placement ...")
        peer = openstack_placement(args.peer_hosts, args.peer_requests)
        mine = peer_side(args.peer_hosts, max(200, args.peer_requests))
    print(
        f"\nplacement benchmark: {args.sites} sites x {args.hosts} hosts x 2 NUMA cells, "
        f"mix {', '.join(SAMPLES)} (snapshot built in {built:.1f} s)\n"
    )
    print(f"{'measure':<44} {'n':>6} {'per s':>10} {'p50 ms':>9} {'p99 ms':>9}")
    print(row("decision only (in memory, one process)", decided))
    print(row("decision + fenced etcd commit", with_etcd["commit"]))
    print(row("baseline: raw etcd compare-and-put txn", with_etcd["raw"]))
    same = with_etcd["raw_same"]
    print(row(f"baseline: raw txn of {same['puts']} puts, {same['bytes']} B", same))
    peer_ratio = None
    if peer["measured"]:
        print(f"\nside by side over {peer['hosts']} hosts ({peer['providers']} resource "
              "providers), one member: 4 pinned cores, 8 GiB in 1 GiB pages, 2 VFs on "
              "physnet1, one NUMA node")
        print(row("Meridian decision (score + pick + plan)", mine))
        print(row(f"peer: Placement allocation_candidates ({peer['candidates']} found)", peer))
        peer_ratio = mine["per_s"] / peer["per_s"]
        print(f"Meridian / Placement rate: {peer_ratio:.1f}x (providers loaded in "
              f"{peer['load_s']:.0f} s)")
    else:
        print(f"{'peer: OpenStack Placement allocation_candidates':<44} not measured: "
              f"{peer['why']}")
    ratio = with_etcd["commit"]["per_s"] / with_etcd["raw"]["per_s"]
    print(
        f"\ninfeasible decisions: {decided['infeasible']} of {decided['n']}; commit conflicts: "
        f"{with_etcd['commit']['conflicts']}; commit rate / raw etcd txn rate: {ratio:.2f} "
        f"(/ same-shape raw txn: {with_etcd['commit']['per_s'] / same['per_s']:.2f})"
    )
    print(
        f"targets: >= 1000 decisions/s: {'met' if decided['per_s'] >= 1000 else 'MISSED'}; "
        f"decision p99 < 5 ms: {'met' if decided['p99_ms'] < 5 else 'MISSED'}"
    )
    print(
        json.dumps(
            {
                "sites": args.sites,
                "hosts_per_site": args.hosts,
                "decision": decided,
                "commit": with_etcd["commit"],
                "raw_etcd": with_etcd["raw"],
                "commit_vs_raw_etcd": ratio,
                "raw_etcd_same_shape": same,
                "commit_vs_raw_same_shape": with_etcd["commit"]["per_s"] / same["per_s"],
                "openstack_placement": peer,
                "meridian_same_ask": mine,
                "meridian_vs_placement": peer_ratio,
                "snapshot_build_s": built,
                "etcd_seed_s": with_etcd["seed_s"],
                "median_decision_ms": statistics.median([decided["p50_ms"]]),
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
