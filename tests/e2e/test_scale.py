"""100 sim agents, each its own certificate and mTLS stream, across 3 broker replicas."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from broker.devfed.federation import Federation

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SITES = [f"edge-{i:03d}" for i in range(1, 101)]


def test_hundred_agents_all_up(tmp_path: Path) -> None:
    fed = Federation(state=tmp_path / "fed", brokers=3, heartbeat_interval=1.0, down_after=3.0)
    try:
        fed.up(SITES, per_process=25)
        states = fed.wait_all_up(SITES, timeout=180)
        not_up = {s: st for s, st in states.items() if st != "UP"}
        assert not not_up and len(states) == 100, f"not UP: {not_up}"
        sites = fed.api_get("/v1/sites")["sites"]
        per_replica = Counter(s["replica"] for s in sites)
        assert set(per_replica) == set(fed.broker_names()), per_replica
        assert min(per_replica.values()) >= 15, f"streams badly spread: {per_replica}"
        events = fed.api_get("/v1/events?limit=1000")["events"]
        assert not [e for e in events if e["kind"] == "site.down"]
    finally:
        fed.down()
