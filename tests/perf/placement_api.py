"""The placement benchmark's live part: the user's path through the REST API.

A local federation — real etcd, one broker replica, sim agents in swarm processes
(``tests.perf.swarm``: each agent its own certificate and mTLS stream) reporting their
inventories — is grown in two steps:

1. ``--peer-sites`` sites (4 hosts of 2 NUMA cells each, as ``meridian dev up`` makes
   them). The inventories they reported are read back from etcd and loaded into a
   private OpenStack Placement (``placement_peer``), so both sides hold the same hosts;
   then the same number of requests, one keep-alive client each, concurrency 1:
   Meridian ``POST /v1/vnfs?dry_run=true`` of the one-member vFirewall ask, and
   Placement ``GET /allocation_candidates`` of the same ask;
2. the rest of ``--sites`` (1,000): then ``POST /v1/vnfs?dry_run=true`` of the sample mix
   at concurrency 1 and 8 (keep-alive clients, one per worker thread).

Each request is timed from send to the whole answer; the rate is requests over the wall
time of the run. Every answer must be 200, and a dry-run must be feasible: a benchmark
of refusals would measure the wrong path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from broker import settings as broker_settings
from broker.devfed.federation import Federation
from broker.models import codec
from broker.models import vnf as model
from broker.models.inventory import Host, Inventory
from broker.store import keys
from quota import models as quota_models
from tests.perf import fleet, harness, placement_peer
from tests.perf.harness import say

TENANT = "acme-nfv"  # the samples' tenant
METROS = 20


def figures(times: list[float], wall: float) -> dict[str, Any]:
    return {
        "n": len(times),
        "per_s": len(times) / wall if wall else 0.0,
        "p50_ms": harness.percentile(times, 50) * 1e3,
        "p99_ms": harness.percentile(times, 99) * 1e3,
        "wall_s": wall,
    }


@dataclass
class Live:
    """A running federation and the swarms that are its sites."""

    fed: Federation
    state: Path
    processes: int
    sites: list[str] = field(default_factory=list)
    swarms: list[fleet.Swarms] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.fed.token}"}

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.fed.api_url(), headers=self.headers, timeout=120.0,
            verify=self.fed.api_verify,
        )

    def grow(self, sites: list[str], timeout: float, ramp: float = 0.0) -> float:
        """Register ``sites``, start their agents (spread over ``ramp`` s), wait until
        every site is UP."""
        t0 = time.monotonic()
        first = len(self.sites)
        with self.client() as client:
            for i, site in enumerate(sites, first):
                body = {
                    "id": site,
                    "region": f"region-{i % 3 + 1}",
                    "zone": f"zone-{i % 2 + 1}",
                    "labels": {"location": f"metro-{i % METROS}", "cost": str(1 + i % 5)},
                }
                for _ in range(10):  # a loaded etcd may time out: 503 says when to retry
                    resp = client.post("/v1/sites", json=body)
                    if resp.status_code != 503:
                        break
                    time.sleep(float(resp.headers.get("Retry-After", "1")))
                if resp.status_code not in (201, 409):
                    raise RuntimeError(f"registering {site}: {resp.status_code} {resp.text}")
        configs = [self.fed.agent_config(s) for s in sites]
        name = f"swarm{len(self.swarms)}"
        groups = fleet.groups_of(configs, self.processes)
        self.sites += sites
        # watched in etcd, not polled through the API: the observer costs the broker nothing
        tracker = harness.UpTracker(
            harness.etcd_client(self.fed.etcd_settings()), self.root, self.sites
        )
        try:
            self.swarms.append(fleet.Swarms(name, groups, self.state, ramp))
            if tracker.wait_all_up(timeout) is None:
                raise RuntimeError(
                    f"only {tracker.up()} of {len(self.sites)} sites UP after {timeout:.0f} s"
                )
        finally:
            tracker.close()
        return time.monotonic() - t0

    @property
    def root(self) -> str:
        return broker_settings.load(self.fed.state / "brokers" / "broker-1.toml").etcd.root

    def inventories(self, sites: Sequence[str]) -> list[Host]:
        """The hosts the agents of ``sites`` reported, as the broker stored them."""
        root = self.root
        client = harness.etcd_client(self.fed.etcd_settings())
        hosts: list[Host] = []
        try:
            for site in sites:
                value, _ = client.get(root + keys.inventory(site))
                if value is None:
                    raise RuntimeError(f"site {site} is UP but has no inventory in etcd")
                hosts += codec.decode(Inventory, value).hosts
        finally:
            client.close()
        return hosts

    def stop(self) -> None:
        for swarms in self.swarms:
            swarms.stop()
        self.fed.down()


def start(state: Path, n_sites: int, processes: int) -> tuple[Live, list[str]]:
    fed = Federation(state=state / "fed", brokers=1, heartbeat_interval=5.0, down_after=15.0)
    fed.prepare()
    sites = [f"site-{i:04d}" for i in range(n_sites)]
    issued = fleet.issue(fed, sites)
    say(f"{n_sites} site certificates issued in {issued:.1f} s")
    live = Live(fed, state, processes)
    try:
        fed.start_etcd()
        fed.start_broker("broker-1")
        fed.write_records()
        entries = [
            {"a": "metro-paris", "b": f"metro-{m}", "ms": 5.0 + 2 * m} for m in range(METROS)
        ]
        entries += [
            {"a": f"metro-{a}", "b": f"metro-{b}", "ms": 3.0 * abs(a - b) + 4}
            for a in range(METROS)
            for b in range(a + 1, METROS)
        ]
        with live.client() as client:
            resp = client.put("/v1/latency", json={"entries": entries})
            if resp.status_code != 200:
                raise RuntimeError(f"PUT /v1/latency: {resp.status_code} {resp.text}")
            # the samples' tenant may hold the whole mix: the dry run still asks the ledger
            limits = {"limits": dict.fromkeys(quota_models.DEFAULTS, 10**9)}
            resp = client.put(f"/v1/quotas/{TENANT}", json=limits)
            if resp.status_code != 200:
                raise RuntimeError(f"PUT /v1/quotas/{TENANT}: {resp.status_code} {resp.text}")
    except BaseException:
        live.stop()
        raise
    return live, sites


def dry_runs(
    live: Live, descs: Sequence[model.Descriptor], n: int, concurrency: int
) -> dict[str, Any]:
    """``n`` dry-run POSTs of ``descs`` in turn; every answer 200 and feasible."""
    bodies = [model.to_json(d) for d in descs]
    sent = [0]

    def send(client: httpx.Client) -> None:
        body = bodies[sent[0] % len(bodies)]
        sent[0] += 1
        resp = client.post("/v1/vnfs", params={"dry_run": "true"}, json=body)
        if resp.status_code != 200:
            raise RuntimeError(f"dry run: {resp.status_code} {resp.text[:500]}")
        if not resp.json()["feasible"]:
            raise RuntimeError(f"dry run not feasible: {resp.json()['plan']['reason']}")

    send_one = live.client()
    try:
        send(send_one)  # warm: the first answer pays for imports and caches
    finally:
        send_one.close()
    times, wall = placement_peer.drive(n, concurrency, live.client, send)
    return {**figures(times, wall), "concurrency": concurrency}


def peer_pair(live: Live, ask: model.Descriptor, n: int) -> dict[str, Any]:
    """Meridian's dry-run and Placement's allocation candidates over the same hosts, the
    same number of requests, keep-alive, concurrency 1. Raises when the peer cannot run."""
    hosts = live.inventories(live.sites)
    venv = placement_peer.services_venv()
    peer = placement_peer.Placement(venv)
    try:
        peer.start()
        loaded = peer.load(hosts)
        say(f"peer: {len(hosts)} hosts loaded into Placement in {loaded:.0f} s")
        peer.ask(3)  # warm
        p_times, p_wall, found = peer.ask(n)
    finally:
        peer.stop()
    if found == 0:
        raise RuntimeError("Placement found no candidate: the two sides disagree on the hosts")
    mine = dry_runs(live, [ask], n, 1)
    theirs = {**figures(p_times, p_wall), "candidates": found, "load_s": loaded}
    return {
        "hosts": len(hosts),
        "sites": len(live.sites),
        "meridian": mine,
        "placement": theirs,
        "request": placement_peer.REQUEST,
        "meridian_vs_placement": mine["per_s"] / theirs["per_s"],
    }
