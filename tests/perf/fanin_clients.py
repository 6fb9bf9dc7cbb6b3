"""Fan-in's Meridian phase once per etcd client, and the table that compares them.

The broker processes read ``MERIDIAN_ETCD__CLIENT`` (the settings' environment overlay),
so each phase runs the whole federation with one client; each starts from a fresh etcd
data directory so no phase inherits another's sites, sessions or verdicts.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from broker.devfed.federation import Federation
from broker.store.client import CLIENTS
from tests.perf import fanin_headline, harness

CLIENT_ENV = "MERIDIAN_ETCD__CLIENT"


class PhaseLike(Protocol):
    herd_s: float | None
    ramp_s: float | None
    window_s: float
    acked: int
    connected: int
    cpu: dict[str, float]
    lags: dict[str, float | int]

    def rss_per_site_kib(self, agents: int) -> float: ...


def each_client(
    fed: Federation, args: argparse.Namespace, phase: Callable[[Path], Any]
) -> dict[str, Any]:
    """``phase(state)`` once per client (threaded, then async; ``args.clients`` if set),
    each on a fresh etcd and
    in a state directory of its own (``args.state`` too): the swarms' ready files of one
    phase must not start the next phase's swarms before they are built."""
    by_client: dict[str, Any] = {}
    shared = args.state
    chosen = getattr(args, "clients", None) or sorted(CLIENTS, reverse=True)
    for client in chosen:
        shutil.rmtree(fed.state / "etcd", ignore_errors=True)
        os.environ[CLIENT_ENV] = client
        args.state = shared / f"meridian-{client}"
        args.state.mkdir(parents=True, exist_ok=True)
        try:
            by_client[client] = phase(args.state)
        finally:
            os.environ.pop(CLIENT_ENV, None)
            args.state = shared
    return by_client


def compare(report: harness.Report, raw: Any, by_client: dict[str, Any], agents: int) -> None:
    """The Meridian phase per etcd client, side by side (same load, same machine)."""

    def cpu_ms(p: PhaseLike) -> float | None:
        rate = p.acked / p.window_s if p.window_s else 0.0
        return fanin_headline.cpu_ms_per_heartbeat(p.cpu.get("broker"), rate)

    lines: list[tuple[str, Callable[[PhaseLike], Any]]] = [
        ("all connected, all at once (s)", lambda p: p.herd_s),
        ("all connected, ramped (s)", lambda p: p.ramp_s),
        ("heartbeat lag p50 (ms)", lambda p: p.lags.get("p50")),
        ("heartbeat lag p99 (ms)", lambda p: p.lags.get("p99")),
        ("broker CPU (% of one core)", lambda p: p.cpu.get("broker")),
        (
            "broker CPU / bare server CPU",
            lambda p: harness.ratio(p.cpu.get("broker"), raw.cpu.get("server")),
        ),
        ("broker CPU per heartbeat (ms)", cpu_ms),
        ("etcd CPU (% of one core)", lambda p: p.cpu.get("etcd")),
        ("RSS per site (KiB)", lambda p: p.rss_per_site_kib(agents)),
        ("agents connected at window end", lambda p: p.connected),
    ]
    names = list(by_client)
    report.table(
        "Fan-in, Meridian phase by etcd client (threaded = cslab-etcd3 on threads, "
        "async = grpc.aio on the event loop)",
        ["", *names],
        [[label, *(get(by_client[n]) for n in names)] for label, get in lines],
    )
    report.figures["meridian_by_client"] = {
        n: {label: get(by_client[n]) for label, get in lines} for n in names
    }
