"""The fan-in benchmark's headline figures (issue 16's targets), from its two phases.

Per heartbeat, so that runs with other agent counts and intervals compare: broker CPU
per acked heartbeat against the bare server's in the same run, and etcd KV requests
(Range, Put, DeleteRange, Txn, counted by etcd itself on its /metrics) per heartbeat over
the steady window. Also what the herd and the brokers' logs say (``herd_counts``,
``log_digest``).
"""

from __future__ import annotations

import re
import ssl
import urllib.request
from pathlib import Path
from typing import Any

from broker.settings import EtcdSettings
from tests.perf import harness

KV_STARTED = re.compile(
    r'^grpc_server_started_total\{grpc_method="(Range|Put|DeleteRange|Txn)",'
    r'grpc_service="etcdserverpb.KV"[^}]*\} (\S+)$',
    re.M,
)
TARGETS = {
    "cpu_per_heartbeat_vs_raw": 2.0,
    "etcd_requests_per_heartbeat": 0.01,
    "all_up_s": 120.0,
    "lag_p99_ms": 100.0,
    "rss_per_site_kib": 64.0,
    "false_down": 0,
}


def etcd_kv_requests(etcd: EtcdSettings) -> dict[str, int] | None:
    """KV requests the (first) etcd of ``etcd`` has served, by method; None if unreadable.
    HTTPS with the client certificate when the settings name one."""
    endpoint = etcd.endpoints[0].split("://")[-1]
    context = None
    if etcd.ca_file:
        context = ssl.create_default_context(cafile=etcd.ca_file)
        context.load_cert_chain(etcd.cert_file, etcd.key_file)
    url = f"{'https' if context else 'http'}://{endpoint}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    found = KV_STARTED.findall(text)
    return {method: int(float(n)) for method, n in found} if found else None


def cpu_ms_per_heartbeat(cpu_percent: float | None, acks_per_s: float) -> float | None:
    """Milliseconds of one core per acked heartbeat."""
    if cpu_percent is None or not acks_per_s:
        return None
    return round(cpu_percent * 10.0 / acks_per_s, 3)


def headline(
    *,
    agents: int,
    replicas: int,
    all_up_s: float | None,
    raw_cpu_ms: float | None,
    broker_cpu_ms: float | None,
    etcd_requests: int | None,
    heartbeats: int,
    lag_p99_ms: float | None,
    rss_per_site_kib: float | None,
    false_down: int,
) -> dict[str, Any]:
    vs_raw = round(broker_cpu_ms / raw_cpu_ms, 2) if broker_cpu_ms and raw_cpu_ms else None
    per_hb = (
        round(etcd_requests / heartbeats, 4) if etcd_requests is not None and heartbeats else None
    )
    figures: dict[str, Any] = {
        "agents": agents,
        "replicas": replicas,
        "all_up_s": all_up_s,
        "cpu_per_heartbeat_vs_raw": vs_raw,
        "etcd_requests_per_heartbeat": per_hb,
        "lag_p99_ms": lag_p99_ms,
        "rss_per_site_kib": rss_per_site_kib,
        "false_down": false_down,
    }
    figures["missed"] = [
        name for name, bound in TARGETS.items() if figures[name] is None or figures[name] > bound
    ]
    return figures


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
