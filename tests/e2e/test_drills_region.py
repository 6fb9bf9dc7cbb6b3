"""End to end: a region's DR drill on a real federation of 30 VNFs (issue 11's proof).

6 sim sites in 3 regions (etcd, 3 brokers, 6 agents), 30 VNFs of the sample kinds: 24
vFirewall pairs, 5 vIMS (active-active, one member per region) and one single-member
VNF. The region drilled is the one holding the single member. First the what-if of the
region's loss for the vFirewalls (selected by label); then a live drill of that region
with ``isolate: site`` is refused — the single-member VNF, outside the drill, would lose
service; then the live drill itself: every drill VNF recovers, each measured RTO is what
the event log says (checked here from the events, not from the report), the VNFs
outside the drill see nothing (no desired object rewritten, no event), and failback
restores the original placement. Last, a drill aborted mid-way fails back and ends
ABORTED with nothing left cut. (The leader killed mid-drill: ``test_drills.py``.)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.devfed.federation import Federation
from broker.drills.report import percentile
from broker.store import keys
from broker.store.etcd import EtcdStore
from tests.e2e.conftest import SITES
from tests.e2e.test_drills import (
    ENDED,
    ROOM,
    drill_state,
    etcd,
    events_of,
    post,
    rto_from_events,
)
from tests.e2e.test_failover import roles
from tests.e2e.test_vnf import call
from tests.support import placement as P
from tests.support.federation import running_federation
from tests.support.polling import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FIREWALLS, IMS = 24, 5


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with running_federation(Path(tmp_path_factory.mktemp("federation")), SITES) as fed:
        yield fed


def sample(name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((P.SAMPLES / f"{name}.yaml").read_text())
    return body


def lone() -> dict[str, Any]:
    """The vFirewall as a single member, labelled apart: no standby anywhere."""
    body = sample("vfirewall")
    body["name"], body["labels"] = "lone", {"app": "lone"}
    body["vdus"][0]["redundancy"] = {"model": "single"}
    return body


def placed(fed: Federation) -> dict[str, dict[str, Any]]:
    """The 30 VNFs, created and ACTIVE: id → record."""
    assert call(fed, "PUT", "/v1/quotas/acme-nfv", json={"limits": ROOM}).status_code == 200
    matrix = yaml.safe_load((P.SAMPLES / "latency.yaml").read_text())
    assert call(fed, "PUT", "/v1/latency", json=matrix).status_code == 200
    bodies = [sample("vfirewall")] * FIREWALLS + [sample("vims")] * IMS + [lone()]
    ids = []
    for body in bodies:
        resp = call(fed, "POST", "/v1/vnfs", json=body)
        assert resp.status_code == 202, resp.text
        ids.append(str(resp.json()["id"]))

    def all_active() -> dict[str, dict[str, Any]] | None:
        recs = {v["id"]: v for v in fed.api_get("/v1/vnfs", timeout=10.0)["vnfs"]}
        bad = [f"{i}: {recs[i]['reason']}" for i in ids if recs[i]["state"] == "FAILED"]
        assert not bad, bad
        return recs if all(recs[i]["state"] == "ACTIVE" for i in ids) else None

    wait_for(all_active, timeout=240, what="30 VNFs ACTIVE")
    return {i: fed.api_get(f"/v1/vnfs/{i}") for i in ids}


def placement(rec: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return sorted((m["name"], m["site"], m["host"], m["role"]) for m in rec["members"])


async def desired_of(fed: Federation, vnfs: list[str]) -> dict[str, int]:
    """Every desired object of ``vnfs`` (servers, ports) → its mod revision."""
    store = EtcdStore.from_settings(fed.etcd_settings())
    try:
        kvs, _ = await store.get_prefix(keys.DESIRED)
        return {kv.key: kv.mod_revision for kv in kvs if any(f"/{v}-" in kv.key for v in vnfs)}
    finally:
        await store.close()


def test_a_region_drill_of_30_vnfs(federation: Federation) -> None:
    before = placed(federation)
    single = next(v for v in before if v.startswith("lone-"))
    site_of = {s: federation.api_get(f"/v1/sites/{s}")["spec"]["region"] for s in SITES}
    region = site_of[before[single]["members"][0]["site"]]
    in_region = {s for s, r in site_of.items() if r == region}
    firewalls = [v for v in before if v.startswith("vfirewall-")]

    def sites(v: str) -> set[str]:
        return {m["site"] for m in before[v]["members"]}

    drilled = sorted(v for v in firewalls if sites(v) & in_region and sites(v) - in_region)
    others = sorted(set(before) - set(drilled))
    assert drilled and len(before) == 30
    selector = {"labels": {"app": "vfirewall"}}

    # the what-if of the region's loss, for the vFirewalls
    plan = post(
        federation,
        "/v1/drills",
        {"mode": "whatif", "scope": {"regions": [region]}, "selector": selector},
    )
    outcomes = {o["vnf"]: o for o in plan["result"]["vnfs"]}
    assert set(drilled) <= set(outcomes) and sorted(plan["result"]["lost_sites"]) == sorted(
        in_region
    )
    for vnf in drilled:
        assert outcomes[vnf]["service"] == "kept", outcomes[vnf]
        assert all(r["site"] not in in_region for r in outcomes[vnf]["replacements"])

    # isolating the region's sites would break the single-member VNF: refused
    live = {
        "mode": "live",
        "scope": {"regions": [region]},
        "selector": selector,
        "vnfs": drilled,
        "max_duration_s": 240,
    }
    resp = call(federation, "POST", "/v1/drills", json={**live, "isolate": "site"})
    assert resp.status_code == 409 and single in resp.text, resp.text

    # the live drill of the region
    marks = asyncio.run(desired_of(federation, others))
    t0 = int(time.time() * 1000)
    doc = post(federation, "/v1/drills", live)
    end = drill_state(federation, doc["id"], ENDED)
    assert end["state"] == "COMPLETED", end["reason"]
    rep = federation.api_get(f"/v1/drills/{doc['id']}/report")
    assert sorted(r["vnf"] for r in rep["vnfs"]) == drilled
    rtos = []
    for row in rep["vnfs"]:
        vnf = row["vnf"]
        assert row["failback"] == "original roles restored" and not row["failed"], row
        assert row["estimate_rto_s"] is not None, row
        was_active = [s for s, role in roles(before[vnf]).items() if role == "active"]
        if not set(was_active) & in_region:
            assert row["rto_s"] == 0.0, row
            continue
        rtos.append(rto_from_events(federation, row, rep["started_ms"]))
    assert rtos and rep["totals"]["rto_p99_s"] == percentile(rtos, 99)
    for vnf in drilled:
        now = federation.api_get(f"/v1/vnfs/{vnf}")
        assert now["state"] == "ACTIVE" and placement(now) == placement(before[vnf]), now
    for vnf in others:
        assert not [e for e in events_of(federation, vnf) if e["at_ms"] >= t0], vnf
        assert placement(federation.api_get(f"/v1/vnfs/{vnf}")) == placement(before[vnf])
    assert asyncio.run(desired_of(federation, others)) == marks, "no desired change outside"
    assert asyncio.run(etcd(federation, keys.DRILL_CUTS)) == []
    print(
        json.dumps(
            {
                "vnfs": len(before),
                "drilled": len(drilled),
                "promoted": len(rtos),
                "rto_s": sorted(rtos),
                "p50": percentile(rtos, 50),
                "p99": percentile(rtos, 99),
            }
        )
    )

    # a drill aborted mid-way fails back and ends ABORTED
    doc = post(federation, "/v1/drills", {**live, "hold_s": 60})
    started = drill_state(federation, doc["id"], ("RUNNING", *ENDED))["started_ms"]

    def promoted() -> bool | None:
        evs = [e for v in drilled for e in events_of(federation, v) if e["at_ms"] >= started]
        return True if any(e["kind"] == "vnf.failover_completed" for e in evs) else None

    wait_for(promoted, timeout=60, what="a drill VNF promoted")
    assert call(federation, "POST", f"/v1/drills/{doc['id']}/abort", json={}).status_code == 202
    end = drill_state(federation, doc["id"], ENDED)
    assert end["state"] == "ABORTED" and "aborted by" in end["reason"], end["reason"]
    assert asyncio.run(etcd(federation, keys.DRILL_CUTS)) == []
    for vnf in drilled:
        now = federation.api_get(f"/v1/vnfs/{vnf}")
        assert now["state"] == "ACTIVE" and placement(now) == placement(before[vnf]), now
