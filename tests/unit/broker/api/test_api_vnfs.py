"""``/v1/vnfs`` and ``/v1/latency`` over the in-memory store, with the controller driven."""

from __future__ import annotations

import json
from typing import Any

import httpx

from broker.controllers.vnfs import VnfController
from broker.models import vnf as model
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.support import placement as P
from tests.unit.broker.api.apitest_support import ADMIN, MEMBER, OPERATOR, assert_problem

SITES = P.regions(2)


def body(name: str = "vims", **change: Any) -> dict[str, Any]:
    data = model.to_json(P.sample(name))
    data.update(change)
    return data


async def seeded(store: MemoryStore) -> None:
    await P.seed_store(store, SITES, P.paris_latency(SITES))


async def test_dry_run_plans_and_writes_nothing(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await seeded(memstore)
    resp = await api.post("/v1/vnfs?dry_run=true", json=body(), headers=OPERATOR)
    assert resp.status_code == 200, resp.text
    plan = resp.json()["plan"]
    assert resp.json()["feasible"] and len({a["region"] for a in plan["assignments"]}) == 3
    assert (await memstore.get_prefix(keys.VNFS))[0] == []


async def test_yaml_body_is_accepted(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    await seeded(memstore)
    text = (P.SAMPLES / "vfirewall.yaml").read_text()
    resp = await api.post("/v1/vnfs?dry_run=true", content=text, headers=ADMIN)
    assert resp.status_code == 200 and resp.json()["feasible"], resp.text


async def test_bad_input_points_at_the_field(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    await seeded(memstore)
    bad = body()
    bad["vdus"][0]["virtual_compute"]["num_virtual_cpu"] = -1
    resp = await api.post("/v1/vnfs", json=bad, headers=ADMIN)
    assert_problem(resp, 422, field="vdus[0].virtual_compute.num_virtual_cpu")
    five = body()
    five["vdus"][0]["redundancy"] = {"model": "active-active", "n": 5, "min_sites": 5}
    resp = await api.post("/v1/vnfs", json=five, headers=ADMIN)
    assert_problem(resp, 422, field="vdus[0].anti_affinity", detail_has="federation has 3")


async def test_no_feasible_plan_fails_the_vnf_with_reasons(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    """The route does not plan: the VNF is stored PENDING, the controller plans once and
    fails it with every site's reason (the dry run says the same before anything)."""
    await seeded(memstore)
    # the tenant may have the cores: what blocks here is capacity, not quota
    limits = {"limits": {"cores": -1}}
    assert (await api.put("/v1/quotas/acme-nfv", json=limits, headers=ADMIN)).status_code == 200
    huge = body()
    huge["vdus"][0]["virtual_compute"]["num_virtual_cpu"] = 500
    dry = await api.post("/v1/vnfs?dry_run=true", json=huge, headers=ADMIN)
    assert dry.status_code == 200 and not dry.json()["feasible"], dry.text
    assert dry.json()["plan"]["reason"].startswith("no feasible plan")
    resp = await api.post("/v1/vnfs", json=huge, headers=ADMIN)
    assert resp.status_code == 202, resp.text
    vnf_id = resp.json()["id"]
    controller = VnfController(memstore, await memstore.put(keys.LEADER, b"me"))
    controller.snap = await controller.live.current()
    await controller.step(vnf_id)
    shown = (await api.get(f"/v1/vnfs/{vnf_id}", headers=ADMIN)).json()
    assert shown["state"] == "FAILED" and shown["reason"].startswith("no feasible plan")
    plan = (await api.get(f"/v1/vnfs/{vnf_id}/explain", headers=ADMIN)).json()["explain"]
    filtered = plan["vdus"]["cscf"]["filtered"]
    assert len(filtered) == len(SITES) and all("numa-cores" in f["reason"] for f in filtered)
    assert (await memstore.get_prefix(keys.DESIRED))[0] == []


async def test_quota_refusal_is_the_plans_top_level_reason(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await seeded(memstore)
    limits = {"limits": {"cores": 10}}  # the vIMS sample asks 12
    assert (await api.put("/v1/quotas/acme-nfv", json=limits, headers=ADMIN)).status_code == 200
    resp = await api.post("/v1/vnfs?dry_run=true", json=body(), headers=OPERATOR)
    assert resp.status_code == 200, resp.text
    assert resp.json()["feasible"] is False
    plan = resp.json()["plan"]
    assert plan["reason"].startswith("quota: quota exceeded for cores")
    assert "requested 12, 10 left" in plan["quota"] and plan["assignments"] == []
    resp = await api.post("/v1/vnfs", json=body(), headers=OPERATOR)
    problem = assert_problem(resp, 409, field="tenant", detail_has="requested 12, 10 left")
    assert problem["type"].endswith("quota-exceeded") and "cores" in problem["plan"]["quota"]
    assert (await memstore.get_prefix(keys.VNFS))[0] == []
    # with the headroom back, the same request is feasible
    limits = {"limits": {"cores": 12}}
    assert (await api.put("/v1/quotas/acme-nfv", json=limits, headers=ADMIN)).status_code == 200
    resp = await api.post("/v1/vnfs?dry_run=true", json=body(), headers=OPERATOR)
    assert resp.json()["feasible"] is True and "quota" not in resp.json()["plan"], resp.text


async def test_members_only_for_their_project(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await seeded(memstore)
    resp = await api.post("/v1/vnfs", json=body(), headers=MEMBER)
    assert_problem(resp, 403)
    resp = await api.post("/v1/vnfs?dry_run=true", json=body(tenant="p-max"), headers=MEMBER)
    assert resp.status_code == 200


async def test_create_place_show_explain_delete(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await seeded(memstore)
    leader_rev = await memstore.put(keys.LEADER, b"me")
    controller = VnfController(memstore, leader_rev)
    from broker.placement.snapshot import Snapshot

    controller.snap = await Snapshot.load(memstore)
    resp = await api.post("/v1/vnfs", json=body(), headers=ADMIN)
    assert resp.status_code == 202, resp.text
    vnf_id = resp.json()["id"]
    assert resp.headers["location"] == f"/v1/vnfs/{vnf_id}"
    live = (await api.get(f"/v1/vnfs/{vnf_id}/explain", headers=ADMIN)).json()
    assert live["live"] and live["explain"]["feasible"]
    await controller.step(vnf_id)
    shown = (await api.get(f"/v1/vnfs/{vnf_id}", headers=ADMIN)).json()
    assert shown["state"] == "PLACED" and len(shown["members"]) == 3
    desired, _ = await memstore.get_prefix(keys.DESIRED)
    kinds = sorted({kv.key.split("/")[2] for kv in desired})
    assert kinds == ["flavor", "image", "network", "port", "server", "server_group", "subnet"]
    explain = (await api.get(f"/v1/vnfs/{vnf_id}/explain", headers=ADMIN)).json()
    assert not explain["live"] and len(explain["assignments"]) == 3
    # the agents report READY: the VNF turns ACTIVE
    for m in shown["members"]:
        server = f"{vnf_id}-{m['name']}"
        status = {
            "kind": "server",
            "name": server,
            "observed_generation": 1,
            "state": "READY",
            "message": "",
            "outputs": {"host": m["host"]},
            "at_ms": 5,
        }
        await memstore.put(keys.observed(m["site"], "server", server), json.dumps(status).encode())
    await controller.step(vnf_id)
    assert (await api.get(f"/v1/vnfs/{vnf_id}", headers=ADMIN)).json()["state"] == "ACTIVE"
    assert (await api.delete(f"/v1/vnfs/{vnf_id}", headers=ADMIN)).status_code == 202
    await controller.step(vnf_id)  # tombstones
    tomb = json.loads(desired[0].value)
    now = await memstore.get(desired[0].key)
    assert now is not None and json.loads(now.value)["deleted"] and not tomb["deleted"]
    for m in shown["members"]:
        server = f"{vnf_id}-{m['name']}"
        status = {"kind": "server", "name": server, "observed_generation": 2, "state": "DELETED"}
        await memstore.put(keys.observed(m["site"], "server", server), json.dumps(status).encode())
    await controller.step(vnf_id)
    assert (await api.get(f"/v1/vnfs/{vnf_id}", headers=ADMIN)).status_code == 404
    claims, _ = await memstore.get_prefix(keys.CLAIMS)
    assert all(json.loads(kv.value)["claims"] == {} for kv in claims)


async def test_latency_matrix(api: httpx.AsyncClient) -> None:
    entries = [{"a": "metro-paris", "b": "s1-0", "ms": 8.5}]
    resp = await api.put("/v1/latency", json={"entries": entries}, headers=ADMIN)
    assert resp.status_code == 200 and resp.json()["entries"] == 1
    assert (await api.get("/v1/latency", headers=MEMBER)).json()["entries"] == entries
    assert_problem(await api.put("/v1/latency", json={"entries": entries}, headers=OPERATOR), 403)
    bad = [{"a": "x", "b": "x", "ms": 1.0}]
    resp = await api.put("/v1/latency", json={"entries": bad}, headers=ADMIN)
    assert_problem(resp, 422, field="entries[0].b")
