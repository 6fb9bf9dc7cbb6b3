"""Benchmark: stitched networks — tunnel throughput, verify time, allocator latency.

    python -m tests.perf.stitching [--seconds 5] [--sites 2,8,16] [--networks 10000] [--quick]

(a) **Tunnel vs raw**: two sites' gateways (namespaces) on a test WAN, a VM namespace on
    each side of a stitched l2-stretched network; iperf3 TCP VM→VM across the gateways'
    VXLAN tunnel, and — the baseline, same run, same two namespaces — across a raw veth
    pair joining them directly (with GRO on, as the gateway sets on its underlay);
    alternated 3 times, medians. Target: ratio ≥ 0.8.
(b) **POST /v1/networks → verify all green** for 2, 8 and 16 sites (full mesh): etcd, 3
    brokers and one agent process per site, each agent owning a gateway namespace on the
    test WAN; timed from the POST that is accepted until ``verify`` reports every pair
    reachable (ICMP + TCP). Also, the data plane alone: gateways built in-process from
    the rendered objects, then every gateway probes every peer. Target: 16 sites ≤ 10 s.
(c) **Allocator**: ``--networks`` networks allocated then freed through the fenced ledger
    on a real etcd; per-operation p50/p99, and duplicates (a VNI, route target or
    overlapping block held by two networks at once) counted. Baseline: a bare fenced
    etcd transaction through the same store, same run.

Root only (namespaces). Everything lives in namespaces the benchmark creates and removes;
198.18.0.0/15 addresses exist only inside them. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import itertools
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from broker.election.fencing import fenced_txn
from broker.settings import StitchingSettings
from broker.stitching import layout
from broker.stitching.ledger import Ledger, Request
from broker.store import keys
from broker.store.etcd import EtcdStore
from broker.store.protocol import Put
from siteagent.datapath import probe
from tests.perf.harness import percentile
from tests.support import etcd as etcd_support
from tests.support import netlab, stitchfed
from tests.support.federation import running_federation

RAW = ("198.19.255.1", "198.19.255.2")


def iperf(client_ns: str, server_ns: str, address: str, seconds: float) -> float:
    """Gbit/s of one iperf3 TCP stream from ``client_ns`` to ``address`` in ``server_ns``."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", address],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.3)
        out = netlab.sh("iperf3", "-c", address, "-t", str(seconds), "-J", ns=client_ns)
    finally:
        server.wait(timeout=30)
    bits = json.loads(out)["end"]["sum_received"]["bits_per_second"]
    return float(bits) / 1e9


def throughput(seconds: float, rounds: int) -> dict[str, Any]:
    lab = netlab.Lab.create(["a", "b"])
    try:
        cidr = "10.99.0.0/24"
        specs = lab.specs(layout.L2, cidr, 7001, ["a", "b"])
        segs = {s.site: s for s in layout.lay_out(layout.L2, cidr, ["a", "b"])}
        vms = {}
        for site in ("a", "b"):
            lab.gateway(site).reconcile([specs[site]])
            vms[site] = lab.vm(site, specs[site], f"{segs[site].pool[0]}/24")
        # the baseline: a raw veth pair straight between the same two VM namespaces
        netlab.sh("ip", "link", "add", "rawa", "netns", vms["a"], "type", "veth", "peer",
                  "name", "rawb", "netns", vms["b"])  # fmt: skip
        for ns, dev, ip in ((vms["a"], "rawa", RAW[0]), (vms["b"], "rawb", RAW[1])):
            netlab.sh("ip", "addr", "add", f"{ip}/30", "dev", dev, ns=ns)
            netlab.sh("ip", "link", "set", dev, "up", ns=ns)
            # the same receive offload the gateway turns on for its underlay
            netlab.sh("ethtool", "-K", dev, "gro", "on", ns=ns)
        netlab.sh("ping", "-c", "2", "-w", "5", segs["b"].pool[0], ns=vms["a"])
        raw, tunnel = [], []
        for _ in range(rounds):  # alternated: the machine is shared, its load drifts
            raw.append(iperf(vms["a"], vms["b"], RAW[1], seconds))
            tunnel.append(iperf(vms["a"], vms["b"], segs["b"].pool[0], seconds))
        base, tun = statistics.median(raw), statistics.median(tunnel)
        return {"raw_gbps": round(base, 2), "tunnel_gbps": round(tun, 2),
                "tunnel_vs_raw": round(tun / base, 3), "mtu_inner": specs["a"].mtu,
                "iperf_rounds": rounds}  # fmt: skip
    finally:
        lab.cleanup()


def verify_time(n: int) -> dict[str, Any]:
    sites = [f"s{i}" for i in range(n)]
    lab = netlab.Lab.create(sites)
    try:
        started = time.perf_counter()
        specs = lab.specs(layout.L2, "10.98.0.0/22", 7100 + n, sites)
        for site in sites:
            lab.gateway(site).reconcile([specs[site]])
        built = time.perf_counter() - started
        rounds, results = asyncio.run(_verify_until_green(lab, specs))
        total = time.perf_counter() - started
        bad = [r for r in results if not r.ok]
        return {"sites": n, "pairs": len(results), "failed_pairs": len(bad),
                "build_s": round(built, 2), "verify_s": round(total, 2), "rounds": rounds,
                "rtt_ms_p50": percentile([r.rtt_ms or 0.0 for r in results], 50)}  # fmt: skip
    finally:
        lab.cleanup()


async def _verify_until_green(
    lab: netlab.Lab, specs: dict[str, Any], attempts: int = 5
) -> tuple[int, list[probe.PairResult]]:
    sockets = {s: probe.Sockets(lab.gateways[s].endpoint.namespace) for s in specs}
    responders = [probe.Responder(sockets[s]) for s in specs]
    results: list[probe.PairResult] = []
    try:
        for r in responders:
            await r.start()
        for attempt in range(1, attempts + 1):
            rounds = [
                probe.probe(
                    s,
                    sockets[s],
                    [(p, specs[p].address.split("/")[0]) for p in specs if p != s],
                    count=2,
                )
                for s in specs
            ]
            results = [r for found in await asyncio.gather(*rounds) for r in found]
            if all(r.ok for r in results):
                return attempt, results
        return attempts, results
    finally:
        for r in responders:
            await r.stop()
        for s in sockets.values():
            s.close()


def api_verify_time(n: int, state: Path) -> dict[str, Any]:
    """POST /v1/networks → READY → verify all green, through brokers and n agents."""
    sites = [f"st-{i:02d}" for i in range(n)]
    lab = netlab.Lab.create(sites)
    try:
        with running_federation(
            state / f"fed-{n}", sites, agent_sections=stitchfed.gateway_sections(lab)
        ) as fed:
            body = {"name": f"bench-{n}", "tenant": "t1", "type": "l2-stretched", "sites": sites}
            started = 0.0

            def created() -> bool:  # the agents report their endpoints first (not timed)
                nonlocal started
                started = time.perf_counter()
                resp = stitchfed.call(fed, "POST", "/v1/networks", json=body)
                assert resp.status_code in (201, 202, 422), resp.text
                return resp.status_code != 422

            stitchfed.until(created, 120, "every gateway endpoint reported")
            path = f"/v1/networks/bench-{n}"
            stitchfed.until(
                lambda: stitchfed.call(fed, "GET", path).json()["state"] == "READY", 120, "READY"
            )
            ready = time.perf_counter() - started
            report = stitchfed.until(
                lambda: (r := stitchfed.call(fed, "POST", f"{path}/verify").json())["ok"] and r,
                120,
                "verify all green",
            )
            total = time.perf_counter() - started
        return {
            "sites": n,
            "pairs": len(report["pairs"]),
            "ready_s": round(ready, 2),
            "verify_s": round(total, 2),
        }
    finally:
        lab.cleanup()


async def allocator(networks: int) -> dict[str, Any]:
    cluster = etcd_support.start_single()
    store = EtcdStore.from_settings(cluster.settings(root="/bench/stitching/"))
    try:
        await store.put(keys.LEADER, b"bench")
        kv = await store.get(keys.LEADER)
        assert kv is not None
        fence = kv.create_revision
        raw = []
        for i in range(min(networks, 2000)):
            t = time.perf_counter()
            await fenced_txn(store, fence, [Put(f"bench/raw/{i}", b"x")])
            raw.append((time.perf_counter() - t) * 1000)
        settings = StitchingSettings(supernets={"*": ("10.0.0.0/8",)}, vni_range=(1, 100_000))
        ledger = Ledger(store, fence, settings)
        await ledger.load()
        alloc_ms, free_ms, held = [], [], []
        for i in range(networks):
            t = time.perf_counter()
            held.append(await ledger.allocate(Request(f"n{i}", "t", cidr="/24")))
            alloc_ms.append((time.perf_counter() - t) * 1000)
        dups = _duplicates(held)
        for a in held:
            t = time.perf_counter()
            await ledger.release(a.network)
            free_ms.append((time.perf_counter() - t) * 1000)
        left, _ = await store.get_prefix(keys.IPAM)
        return {"networks": networks, "duplicates": dups,
                "alloc_p50_ms": percentile(alloc_ms, 50), "alloc_p99_ms": percentile(alloc_ms, 99),
                "free_p99_ms": percentile(free_ms, 99),
                "raw_txn_p50_ms": percentile(raw, 50), "raw_txn_p99_ms": percentile(raw, 99),
                "keys_left": len([k for k in left if not k.key.endswith("head")])}  # fmt: skip
    finally:
        await store.close()
        cluster.cleanup()


def _duplicates(held: list[Any]) -> int:
    vnis = len(held) - len({a.vni for a in held})
    rts = len(held) - len({a.rt for a in held})
    nets = sorted(ipaddress.IPv4Network(a.cidr) for a in held)
    overlaps = sum(1 for x, y in itertools.pairwise(nets) if x.overlaps(y))
    return vnis + rts + overlaps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="iperf3 run length")
    ap.add_argument("--sites", default="2,8,16", help="site counts for the verify timing")
    ap.add_argument("--networks", type=int, default=10_000, help="allocator run size")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 s, 2,4 sites, 500")
    args = ap.parse_args()
    if not netlab.is_root():
        raise SystemExit(netlab.NOT_ROOT)
    if args.quick:
        args.seconds, args.sites, args.networks = 2.0, "2,4", 500
    tp = throughput(args.seconds, 1 if args.quick else 3)
    print(f"(a) TCP VM->VM, iperf3 {args.seconds:g} s x {tp['iperf_rounds']} (medians), "
          f"inner MTU {tp['mtu_inner']}")  # fmt: skip
    print(f"    raw veth {tp['raw_gbps']:>7} Gbit/s   tunnel {tp['tunnel_gbps']:>7} Gbit/s"
          f"   ratio {tp['tunnel_vs_raw']}")  # fmt: skip
    rows = [verify_time(int(n)) for n in args.sites.split(",")]
    with tempfile.TemporaryDirectory(prefix="stitching-bench-") as tmp:
        api_rows = [api_verify_time(int(n), Path(tmp)) for n in args.sites.split(",")]
    print("(b) configure -> verify all green (data plane; full mesh)")
    print(f"    {'sites':>5}{'pairs':>7}{'failed':>8}{'build s':>9}{'total s':>9}{'rtt p50':>9}")
    for r in rows:
        print(f"    {r['sites']:>5}{r['pairs']:>7}{r['failed_pairs']:>8}{r['build_s']:>9}"
              f"{r['verify_s']:>9}{r['rtt_ms_p50']:>9.3f}")  # fmt: skip
    print("(b') POST /v1/networks -> READY -> verify all green, 3 brokers, one agent per site")
    print(f"    {'sites':>5}{'pairs':>7}{'ready s':>9}{'verify s':>10}")
    for r in api_rows:
        print(f"    {r['sites']:>5}{r['pairs']:>7}{r['ready_s']:>9}{r['verify_s']:>10}")
    al = asyncio.run(allocator(args.networks))
    print(f"(c) allocator, {al['networks']} networks on etcd: alloc p50 {al['alloc_p50_ms']:.2f} "
          f"p99 {al['alloc_p99_ms']:.2f} ms, free p99 {al['free_p99_ms']:.2f} ms; "
          f"bare fenced txn p50 {al['raw_txn_p50_ms']:.2f} p99 {al['raw_txn_p99_ms']:.2f} ms; "
          f"duplicates {al['duplicates']}, keys left {al['keys_left']}")  # fmt: skip
    by_sites = {r["sites"]: r for r in api_rows}
    dataplane = {r["sites"]: r for r in rows}
    biggest = by_sites.get(16) or api_rows[-1]
    print(json.dumps({
        "benchmark": "stitching", **tp, "verify": api_rows, "verify_dataplane": rows,
        "verify_16_sites_s": biggest["verify_s"] if 16 in by_sites else None,
        "dataplane_verify_16_sites_s": dataplane[16]["verify_s"] if 16 in dataplane else None,
        "verify_sites_max": biggest["sites"], "verify_max_s": biggest["verify_s"],
        "allocator": al, "alloc_p99_ms": al["alloc_p99_ms"], "duplicates": al["duplicates"],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
