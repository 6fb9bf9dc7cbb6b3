"""End to end: broker and agent processes, killed and paused for real.

Ordered like an operator's bad day: an agent dies, a replica dies, the leader dies, the
leader freezes. After each step the federation is put back together.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from broker.devfed.federation import Federation
from tests.support.polling import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def health(fed: Federation, site: str, broker: str | None = None) -> str:
    return str(fed.api_get(f"/v1/sites/{site}", broker=broker)["health"]["state"])


def site_events(fed: Federation, site: str, since_ms: int) -> list[dict[str, Any]]:
    events = fed.api_get(f"/v1/events?subject={site}&limit=1000")["events"]
    return [e for e in events if e["at_ms"] >= since_ms]


def leader(fed: Federation, broker: str | None = None) -> str | None:
    try:
        return fed.api_get("/v1/leader", broker=broker)["leader"]  # type: ignore[no-any-return]
    except Exception:
        return None


def outage_diagnosis(fed: Federation, sites: list[str]) -> str:
    """What the federation says about ``sites`` (not UP after an outage): their status and
    health records, the leader, and the last lines each process logged about them."""
    lines = [f"not UP: {sites}; leader: {leader(fed)}"]
    for site in sites:
        try:
            row = fed.api_get(f"/v1/sites/{site}")
            lines.append(f"{site}: health={row.get('health')} status={row.get('status')}")
        except Exception as exc:
            lines.append(f"{site}: GET failed: {exc}")
        for name, proc in fed.running.items():
            if not name.startswith("broker-") and name != f"agent-{site}":
                continue
            text = proc.log.read_text(errors="replace").splitlines()
            about = [ln for ln in text if site in ln or name.startswith("agent-")]
            lines += [f"  {name}: {ln[:300]}" for ln in about[-12:]]
    return "\n".join(lines)


def now_ms() -> int:
    return int(time.time() * 1000)


def test_sites_spread_over_replicas(federation: Federation) -> None:
    sites = federation.api_get("/v1/sites")["sites"]
    assert {s["health"] for s in sites} == {"UP"}
    assert len({s["replica"] for s in sites}) >= 2, "agents did not spread over replicas"
    assert {s["protocol"] for s in sites} == {"1.2"}


def test_agent_kill_goes_down_then_up(federation: Federation) -> None:
    site = "site-002"
    t0 = now_ms()
    federation.kill(f"agent-{site}")
    wait_for(lambda: health(federation, site) == "DOWN", timeout=5, what=f"{site} DOWN")
    down = [e for e in site_events(federation, site, t0) if e["kind"] == "site.down"]
    assert len(down) == 1 and down[0]["at_ms"] - t0 < 3000, down
    federation.start_agents([site])
    wait_for(lambda: health(federation, site) == "UP", timeout=20, what=f"{site} UP again")
    kinds = [e["kind"] for e in site_events(federation, site, t0)]
    assert kinds == ["site.down", "site.up"], kinds


def test_agent_resumes_on_another_replica(federation: Federation) -> None:
    site = "site-003"
    replica = federation.api_get(f"/v1/sites/{site}")["status"]["replica"]
    t0 = now_ms()
    federation.kill(replica)

    def moved() -> str | None:
        status = federation.api_get(f"/v1/sites/{site}")["status"]
        return status["replica"] if status and status["replica"] != replica else None

    try:
        new_replica = wait_for(moved, timeout=20, what=f"{site} reconnecting to another replica")
        assert new_replica != replica
        assert health(federation, site) == "UP"
        # no false DOWN: the agent was alive all along
        time.sleep(1.0)
        assert not [e for e in site_events(federation, site, t0) if e["kind"] == "site.down"]
    finally:
        federation.start_broker(replica)


def test_leader_kill_hands_controllers_over(federation: Federation) -> None:
    old = wait_for(lambda: leader(federation), timeout=10, what="a leader")
    federation.kill(old)
    new = wait_for(
        lambda: (lambda n: n if n and n != old else None)(leader(federation)),
        timeout=15,
        what="another replica leading",
    )
    # its controllers run: an agent killed now is judged by the new leader
    site, t0 = "site-004", now_ms()
    federation.kill(f"agent-{site}")
    wait_for(lambda: health(federation, site) == "DOWN", timeout=10, what=f"{site} DOWN")
    down = [e for e in site_events(federation, site, t0) if e["kind"] == "site.down"]
    assert down and down[-1]["replica"] == new
    federation.start_broker(old)
    federation.start_agents([site])
    wait_for(lambda: health(federation, site) == "UP", timeout=20, what=f"{site} UP again")


def test_paused_leader_is_fenced_out(federation: Federation) -> None:
    old = wait_for(lambda: leader(federation), timeout=10, what="a leader")
    others = [b for b in federation.broker_names() if b != old]
    t_stop = now_ms()
    federation.kill(old, signal.SIGSTOP)
    try:
        new = wait_for(
            lambda: (lambda n: n if n and n != old else None)(leader(federation, others[0])),
            timeout=15,
            what="a new leader while the old one is paused",
        )
        site = "site-005"
        federation.kill(f"agent-{site}")
        wait_for(
            lambda: health(federation, site, others[0]) == "DOWN", timeout=15, what=f"{site} DOWN"
        )
    finally:
        federation.kill(old, signal.SIGCONT)
    # The old leader wakes up with a stale view (every site silent for seconds): whatever
    # it tries to decide must not land.
    time.sleep(4.0)
    assert leader(federation, old) == new, "the resumed replica should follow the new leader"
    events = federation.api_get("/v1/events?limit=1000")["events"]
    by_old = [e for e in events if e["at_ms"] >= t_stop and e["replica"] == old]
    assert not by_old, f"a deposed leader's decision landed: {by_old}"
    log = federation.running[old].log.read_text()
    assert "fenced out" in log or "leadership lost" in log or "stepped down" in log.lower()
    federation.start_agents(["site-005"])
    wait_for(lambda: health(federation, "site-005") == "UP", timeout=20, what="site-005 UP")


def test_etcd_outage_gives_503_and_loses_nothing(federation: Federation) -> None:
    import httpx

    before = {s["id"] for s in federation.api_get("/v1/sites")["sites"]}
    federation.kill("etcd")
    try:
        resp = wait_for(
            lambda: (lambda r: r if r.status_code == 503 else None)(
                httpx.get(
                    federation.api_url() + "/healthz", timeout=10, verify=federation.api_verify
                )
            ),
            timeout=20,
            what="the API answering 503 while etcd is down",
        )
        problem = resp.json()
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert "etcd" in (problem.get("detail", "") + problem.get("title", "")).lower()
        agents = [p for n, p in federation.running.items() if n.startswith("agent-")]
        time.sleep(2.0)
        assert all(p.alive() for p in agents), "agents must keep running while etcd is down"
    finally:
        federation.start_etcd()
    states = federation.wait_all_up(sorted(before), timeout=60)
    assert {s for s, st in states.items() if st == "UP"} == before, outage_diagnosis(
        federation, sorted(s for s in before if states.get(s) != "UP")
    )
    assert wait_for(lambda: leader(federation), timeout=20, what="a leader after etcd returns")
