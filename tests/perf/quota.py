"""Benchmark: quota reservations/s against raw etcd compare-and-swap, in the same run.

    python -m tests.perf.quota [--seconds 3]

For concurrency 1, 8 and 64, on one hot tenant and spread over 1,000 tenants, it measures:

- **raw CAS** (the limit): cslab-etcd3 directly, one thread per requester, each doing
  compare-mod-and-put transactions on keys nobody else writes (its own key for "hot",
  a random one of its own 1,000 for "spread") — what etcd and this client can do at that
  concurrency with one transaction per operation and no contention at all;
- **raw hot-key CAS**: the same, but every thread on ONE key, counting successful swaps —
  what a naive one-CAS-per-reservation ledger gets on a hot tenant (a retry storm);
- **quota**: ``Ledger.reserve`` (asyncio tasks, group commit) through each etcd client
  side by side -- ``threaded`` (cslab-etcd3 on a thread pool) and ``async`` (grpc.aio on
  the event loop, ``broker.store.etcdaio``) -- with the latency of each reservation
  (nearest-rank p50/p99). The top-level figures are the default client's
  (``EtcdSettings.client``); ``clients`` holds both, ``async_vs_threaded`` their ratio.

Then a tight-limit phase per concurrency checks zero oversubscription on etcd itself:
64 requesters race for a limit of 100 instances; exactly 100 holds may exist.

Two figures, labelled apart because they answer different questions:

- **like for like, concurrency 1**: one requester, so the ledger cannot batch — each
  reservation is one etcd transaction, as each raw CAS is. quota/s ÷ raw CAS/s here is
  the ledger's own overhead per reservation (``like_for_like_c1``);
- **batched admission, concurrency 8 and 64**: the ledger's group commit puts many
  reservations into one transaction (``req/txn``), so quota/s can exceed raw CAS/s. That
  is the admission rate a replica sustains, not a per-operation comparison
  (``batched_admission``).

Prints a table; the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import threading
import time
from typing import Any

import etcd3

from broker.quotas.ledgerstore import StoreLedger
from broker.settings import EtcdSettings
from broker.store import keys
from broker.store.client import CLIENTS
from quota import errors
from quota.ledger import Ledger
from quota.models import MAX_LIMIT, TenantId, TenantQuota
from tests.perf import harness
from tests.support import etcd as etcd_support

CONCURRENCY = (1, 8, 64)
DEFAULT = EtcdSettings().client
SPREAD_TENANTS = 1_000


def raw_cas(endpoint: str, threads: int, seconds: float, mode: str) -> float:
    """Successful CAS transactions per second (mode: own, spread, shared)."""
    host, port = endpoint.rsplit(":", 1)
    client = etcd3.client(host=host, port=int(port), timeout=10)
    prefix = f"/bench/raw/{mode}/{threads}/{random.random()}/"
    done = [0] * threads
    stop = threading.Event()

    def worker(i: int) -> None:
        rng = random.Random(i)
        mods: dict[str, int] = {}
        count = 0
        while not stop.is_set():
            if mode == "own":
                key = f"{prefix}{i}"
            elif mode == "spread":
                key = f"{prefix}{i}/{rng.randrange(SPREAD_TENANTS)}"
            else:
                key = f"{prefix}shared"
            mod = mods.get(key, 0)
            ok, responses = client.transaction(
                compare=[client.transactions.mod(key) == mod],
                success=[client.transactions.put(key, str(count))],
                failure=[client.transactions.get(key)],
            )
            if ok:
                count += 1
                mods[key] = int(responses[0].response_put.header.revision)
            else:
                found = responses[0]
                mods[key] = int(found[0][1].mod_revision) if found else 0
        done[i] = count

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    client.close()
    return sum(done) / elapsed


def open_store(endpoint: str, root: str, client: str) -> Any:
    settings = EtcdSettings(endpoints=(endpoint,), root=root, threads=8, client=client)
    return CLIENTS[client].from_settings(settings)


async def quota_rate(
    endpoint: str, tasks: int, seconds: float, spread: bool, root: str, client: str
) -> tuple[float, dict[str, int], list[float]]:
    store = open_store(endpoint, root, client)
    ledger = Ledger(StoreLedger(store))
    tenants = [TenantId(f"t{n:04d}") for n in range(SPREAD_TENANTS if spread else 1)]
    for tenant in tenants[:1] if not spread else []:
        await ledger.set_quota(tenant, TenantQuota(limits={"instances": MAX_LIMIT}))
    counts = [0] * tasks
    latencies: list[float] = []  # ms, every granted reservation
    stop = asyncio.Event()

    async def requester(i: int) -> None:
        rng = random.Random(i)
        while not stop.is_set():
            tenant = rng.choice(tenants)
            asked = time.perf_counter()
            try:
                await ledger.reserve(tenant, {"ports": 1} if spread else {"instances": 1}, 60)
                latencies.append((time.perf_counter() - asked) * 1000)
                counts[i] += 1
            except errors.QuotaExceeded:  # a spread tenant's default ports quota filled up
                pass

    await ledger.prefetch(tenants)  # warm, as a long-running replica's cache would be
    runners = [asyncio.create_task(requester(i)) for i in range(tasks)]
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*runners)
    elapsed = time.perf_counter() - started
    stats = dict(ledger.stats)
    await ledger.close()
    await store.close()
    return sum(counts) / elapsed, stats, latencies


async def oversubscription(endpoint: str, tasks: int, root: str, client: str) -> dict[str, int]:
    """``tasks`` requesters race for 100 instances; count what etcd holds afterwards."""
    stores = [open_store(endpoint, root, client) for _ in range(2)]
    ledgers = [Ledger(StoreLedger(s)) for s in stores]
    tenant = TenantId("tight")
    await ledgers[0].set_quota(tenant, TenantQuota(limits={"instances": 100}))
    granted = 0

    async def requester(i: int) -> None:
        nonlocal granted
        for _ in range(400 // tasks + 4):
            try:
                await ledgers[i % 2].reserve(tenant, {"instances": 1}, 60)
                granted += 1
            except errors.QuotaExceeded:
                pass

    await asyncio.gather(*(requester(i) for i in range(tasks)))
    items, _ = await stores[0].get_prefix(f"{keys.QUOTA}holds/{tenant}/")
    held = sum(json.loads(kv.value)["deltas"]["instances"] for kv in items)
    for ledger in ledgers:
        await ledger.close()
    for store in stores:
        await store.close()
    return {"granted": granted, "held_in_etcd": held, "limit": 100,
            "oversubscribed": max(0, held - 100)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 s per measurement")
    args = parser.parse_args()
    if args.quick:
        args.seconds = min(args.seconds, 1.0)
    load_start = [round(x, 2) for x in os.getloadavg()]
    cluster = etcd_support.start_single()
    endpoint = cluster.endpoints[0]
    rows: list[dict[str, Any]] = []
    try:
        for shape in ("hot", "spread"):
            for c in CONCURRENCY:
                raw = raw_cas(endpoint, c, args.seconds, "own" if shape == "hot" else "spread")
                shared = raw_cas(endpoint, c, args.seconds, "shared") if shape == "hot" else None
                clients = {
                    client: by_client(endpoint, client, shape, c, args.seconds, raw)
                    for client in sorted(CLIENTS, reverse=True)  # threaded, then async
                }
                chosen = clients[DEFAULT]
                rows.append({
                    "shape": shape, "concurrency": c, "raw_cas_per_s": round(raw),
                    "raw_hot_key_cas_per_s": None if shared is None else round(shared),
                    "client": DEFAULT, **{k: chosen[k] for k in FIGURES},
                    "clients": clients,
                    "async_vs_threaded": harness.ratio(
                        clients["async"]["quota_per_s"], clients["threaded"]["quota_per_s"]
                    ),
                })
                print_row(rows[-1])
    finally:
        cluster.cleanup()
    like, batched = labelled(rows)
    load_end = [round(x, 2) for x in os.getloadavg()]
    print()
    for shape, row in like.items():
        print(f"like for like ({shape}, concurrency 1, one reservation per etcd txn on both "
              f"sides): quota ({DEFAULT} client) {row['quota_per_s']}/s vs raw CAS "
              f"{row['raw_cas_per_s']}/s = "
              f"{row['ratio']} (the ledger's overhead per reservation: {row['overhead_x']}x)")
    for shape, by_c in batched.items():
        rates = ", ".join(f"c={c}: {r['quota_per_s']}/s at {r['per_txn']} req/txn"
                          for c, r in by_c.items())
        print(f"batched admission ({shape}, group commit, not per-operation): {rates}")
    print(f"load average (1, 5, 15 min): {load_start} at the start, {load_end} at the end")
    print(json.dumps({"benchmark": "quota", "seconds": args.seconds, "rows": rows,
                      "like_for_like_c1": like, "batched_admission": batched,
                      "client": DEFAULT,
                      "min_ratio": min(r["ratio"] for r in rows),
                      "async_vs_threaded": {f"{r['shape']}_c{r['concurrency']}":
                                            r["async_vs_threaded"] for r in rows},
                      "oversubscribed": sum(f["oversubscribed"] for r in rows
                                            for f in r["clients"].values()),
                      "loadavg_start": load_start, "loadavg_end": load_end}))


FIGURES = ("quota_per_s", "ratio", "per_txn", "p50_ms", "p99_ms", "oversubscribed",
           "tight_granted", "tight_held")


def by_client(
    endpoint: str, client: str, shape: str, c: int, seconds: float, raw: float
) -> dict[str, Any]:
    """One client's quota figures at concurrency ``c`` (and its tight-limit check)."""
    root = f"/bench/quota/{client}/{shape}/{c}/{random.random()}/"
    rate, stats, latencies = asyncio.run(
        quota_rate(endpoint, c, seconds, shape == "spread", root, client)
    )
    tight_root = f"/bench/tight/{client}/{shape}/{c}/{random.random()}/"
    check = asyncio.run(oversubscription(endpoint, c, tight_root, client))
    lat = harness.summary(latencies, 2)
    return {
        "quota_per_s": round(rate), "ratio": round(rate / raw, 2),
        "per_txn": round(stats.get("requests", 0) / max(1, stats.get("txns", 1)), 1),
        "p50_ms": lat.get("p50"), "p99_ms": lat.get("p99"),
        "oversubscribed": check["oversubscribed"],
        "tight_granted": check["granted"], "tight_held": check["held_in_etcd"],
    }


def labelled(
    rows: list[dict[str, Any]],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[int, dict[str, Any]]]]:
    """The concurrency-1 rows as the like-for-like comparison; the others as batched rates."""
    like: dict[str, dict[str, Any]] = {}
    batched: dict[str, dict[int, dict[str, Any]]] = {}
    for r in rows:
        if r["concurrency"] == 1:
            like[r["shape"]] = {
                "quota_per_s": r["quota_per_s"], "raw_cas_per_s": r["raw_cas_per_s"],
                "ratio": r["ratio"], "per_txn": r["per_txn"],
                "overhead_x": round(r["raw_cas_per_s"] / max(1, r["quota_per_s"]), 2),
            }
        else:
            batched.setdefault(r["shape"], {})[r["concurrency"]] = {
                "quota_per_s": r["quota_per_s"], "per_txn": r["per_txn"],
                "raw_cas_per_s": r["raw_cas_per_s"],
            }
    return like, batched


HEADER = (f"{'shape':<7}{'conc':>5}{'raw CAS/s':>11}{'raw hot-key/s':>15}  "
          f"{'client':<9}{'quota/s':>8}{'ratio':>7}{'p50 ms':>8}{'p99 ms':>8}{'req/txn':>9}"
          f"{'tight: granted/held/limit':>27}  figure")


def print_row(row: dict[str, Any]) -> None:
    if row["shape"] == "hot" and row["concurrency"] == CONCURRENCY[0]:
        print(HEADER)
    hot = "-" if row["raw_hot_key_cas_per_s"] is None else str(row["raw_hot_key_cas_per_s"])
    figure = "like for like" if row["concurrency"] == 1 else "batched admission"
    for n, (client, f) in enumerate(row["clients"].items()):
        lead = (f"{row['shape']:<7}{row['concurrency']:>5}{row['raw_cas_per_s']:>11}{hot:>15}"
                if n == 0 else " " * 38)
        tight = f"{f['tight_granted']}/{f['tight_held']}/100"
        print(f"{lead}  {client:<9}{f['quota_per_s']:>8}{f['ratio']:>7}{f['p50_ms']!s:>8}"
              f"{f['p99_ms']!s:>8}{f['per_txn']:>9}{tight:>27}  {figure}", flush=True)
    print(f"{'':38}  async / threaded = {row['async_vs_threaded']}", flush=True)


if __name__ == "__main__":
    main()
