"""``POST /v1/drills`` (what-if), ``GET /v1/drills/{id}``, ``GET /v1/reports/survivability``:
the decisions a loss would bring, stored under ``drills/`` and nowhere else (invariant 14)."""

from __future__ import annotations

import dataclasses
import json

import httpx

from broker.drills import imagetable
from broker.models import codec
from broker.models import vnf as model
from broker.store import keys
from broker.store.memory import MemoryStore
from replication import catalog as cat
from tests.support import placement as P
from tests.support.drills import reported
from tests.support.placement import SiteDef
from tests.unit.broker.api.apitest_support import ADMIN, MEMBER, NOROLE, OPERATOR
from tests.unit.broker.controllers.test_failover_controller import VNF, seed


async def world(store: MemoryStore) -> None:
    for d in (SiteDef("s1", "r1"), SiteDef("s2", "r1"), SiteDef("s3", "r2")):
        for key, value in P.site_keys(d):
            await store.put(key, value)
    await seed(store)


async def everything(store: MemoryStore) -> dict[str, bytes]:
    kvs, _ = await store.get_prefix("")
    return {kv.key: kv.value for kv in kvs}


async def test_whatif_is_stored_under_drills_and_nothing_else_changes(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await world(memstore)
    before = await everything(memstore)
    resp = await api.post(
        "/v1/drills", json={"mode": "whatif", "scope": {"sites": ["s1"]}}, headers=OPERATOR
    )
    assert resp.status_code == 201, resp.text
    doc = resp.json()
    [vnf] = doc["result"]["vnfs"]
    assert vnf["vnf"] == VNF and vnf["service"] == "kept"
    assert vnf["promotions"] == [{"member": "fw-1", "site": "s2"}]
    assert [r["site"] for r in vnf["replacements"]] == ["s3"]
    after = await everything(memstore)
    added = set(after) - set(before)
    assert added == {keys.drill(doc["id"])}
    assert {k: after[k] for k in before} == before, "nothing outside drills/ changed"
    got = await api.get(f"/v1/drills/{doc['id']}", headers=ADMIN)
    assert got.status_code == 200 and got.json()["result"] == doc["result"]
    mine = await api.get(f"/v1/drills/{doc['id']}", headers=MEMBER)
    assert mine.status_code == 200 and mine.json()["result"]["vnfs"] == [], "another project's"


async def test_refusals_write_nothing(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    await world(memstore)
    before = await everything(memstore)
    for body, headers, status in [
        ({"mode": "whatif", "scope": {"sites": ["s1"]}}, MEMBER, 403),
        ({"mode": "whatif", "scope": {"sites": ["s1"]}}, NOROLE, 403),
        ({"mode": "live", "scope": {"hosts": ["s1/h1"]}}, ADMIN, 422),
        ({"mode": "live", "scope": {"sites": ["s1"]}, "max_duration_s": 0}, ADMIN, 422),
        ({"mode": "live", "scope": {"sites": ["s1"]}, "vnfs": ["nope"]}, ADMIN, 409),
        ({"mode": "whatif", "scope": {}}, ADMIN, 422),
        ({"mode": "whatif", "scope": {"planets": ["x"]}}, ADMIN, 422),
        ({"mode": "whatif", "scope": {"sites": "s1"}}, ADMIN, 422),
        ({"mode": "whatif"}, ADMIN, 422),
    ]:
        resp = await api.post("/v1/drills", json=body, headers=headers)
        assert resp.status_code == status, (body, resp.text)
    assert await everything(memstore) == before
    assert (await api.get("/v1/drills/drill-nope", headers=ADMIN)).status_code == 404


async def test_survivability_report(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    await world(memstore)
    resp = await api.get("/v1/reports/survivability", headers=OPERATOR)
    assert resp.status_code == 200, resp.text
    rows = {f"{r['scope_kind']}:{r['scope']}": r for r in resp.json()["scopes"]}
    assert set(rows) == {
        "site:s1",
        "site:s2",
        "site:s3",
        "zone:r1/z1",
        "zone:r2/z1",
        "region:r1",
        "region:r2",
    }
    assert rows["site:s1"]["survivable"] and rows["site:s3"]["affected"] == 0
    assert rows["region:r1"]["lose_service"] == [VNF]
    assert (await api.get("/v1/reports/survivability", headers=NOROLE)).status_code == 403
    mine = (await api.get("/v1/reports/survivability", headers=MEMBER)).json()
    assert mine["vnfs"] == 0, "a member sees only its project's VNFs"


async def test_survivability_gauges(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    await world(memstore)
    assert (await api.get("/v1/reports/survivability", headers=ADMIN)).status_code == 200
    text = (await api.get("/metrics")).text
    assert 'meridian_survivable{scope="s1",scope_kind="site"} 1.0' in text
    assert 'meridian_survivable{scope="r1",scope_kind="region"} 0.0' in text
    assert "# TYPE meridian_survivability_shortfall gauge" in text  # none short here


LIVE = {"mode": "live", "scope": {"sites": ["s1"]}, "max_duration_s": 60}


async def test_live_drill_is_planned_for_the_leader_and_refused_while_one_runs(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await world(memstore)
    before = await everything(memstore)
    resp = await api.post("/v1/drills", json=LIVE, headers=OPERATOR)
    assert resp.status_code == 201, resp.text
    doc = resp.json()
    assert (doc["state"], doc["sites"], doc["failback"]) == ("PLANNED", ["s1"], True)
    assert set(await everything(memstore)) - set(before) == {keys.drill(doc["id"])}
    again = await api.post("/v1/drills", json=LIVE, headers=OPERATOR)
    assert again.status_code == 409 and doc["id"] in again.json()["detail"], again.text
    listed = (await api.get("/v1/drills", headers=MEMBER)).json()["drills"]
    assert [(d["id"], d["state"]) for d in listed] == [(doc["id"], "PLANNED")]
    early = await api.get(f"/v1/drills/{doc['id']}/report", headers=ADMIN)
    assert early.status_code == 409 and "nothing measured yet" in early.text
    # abort: asked once for the leader; asking again changes nothing
    for _ in range(2):
        ab = await api.post(f"/v1/drills/{doc['id']}/abort", headers=OPERATOR)
        assert ab.status_code == 202, ab.text
    assert (await memstore.get(keys.drill_asked(doc["id"]))) is not None
    assert (await api.post(f"/v1/drills/{doc['id']}/abort", headers=MEMBER)).status_code == 403


async def test_live_drill_refused_when_a_site_is_down_or_service_would_be_lost(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await world(memstore)
    both = {**LIVE, "scope": {"sites": ["s1", "s2"]}}
    resp = await api.post("/v1/drills", json=both, headers=OPERATOR)
    assert resp.status_code == 409 and "losing service" in resp.text, resp.text
    for key, value in P.site_keys(SiteDef("s1", "r1", health="DOWN")):
        await memstore.put(key, value)
    before = await everything(memstore)
    resp = await api.post("/v1/drills", json=LIVE, headers=OPERATOR)
    assert resp.status_code == 409 and "s1 is DOWN" in resp.text, resp.text
    assert await everything(memstore) == before


async def test_a_live_report_as_json_and_html(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    doc = reported(VNF)
    await memstore.put(keys.drill("drill-x"), json.dumps(doc).encode())
    got = await api.get("/v1/drills/drill-x/report", headers=ADMIN)
    assert got.status_code == 200 and got.json()["totals"]["rto_p99_s"] == 1.5
    page = await api.get("/v1/drills/drill-x/report?format=html", headers=ADMIN)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<svg" in page.text and "cut &lt;s1&gt;" in page.text, "escaped, with a chart"
    other = await api.get("/v1/drills/drill-x/report", headers=MEMBER)
    assert other.json()["vnfs"] == [], "another project's VNF"
    listed = (await api.get("/v1/drills", headers=ADMIN)).json()["drills"]
    assert listed[0]["rto_p99_s"] == 1.5


async def test_whatif_is_bound_by_the_tenants_quota(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await world(memstore)
    put = await api.put("/v1/quotas/acme-nfv", json={"limits": {"pinned_cores": 1}}, headers=ADMIN)
    assert put.status_code == 200, put.text
    resp = await api.post(
        "/v1/drills", json={"mode": "whatif", "scope": {"sites": ["s1"]}}, headers=OPERATOR
    )
    [vnf] = resp.json()["result"]["vnfs"]
    [why] = vnf["cannot_restore"]
    assert why["kind"] == "quota" and "pinned_cores needs" in why["reason"], why
    rows = (await api.get("/v1/reports/survivability", headers=ADMIN)).json()["scopes"]
    assert VNF in next(r for r in rows if r["scope"] == "s1")["stay_degraded"]


async def test_survivability_answers_from_the_leaders_report(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await world(memstore)
    report = {"scopes": [], "survivable": True, "not_survivable": [], "vnfs": 0, "took_s": 1}
    await memstore.put(keys.SURVIVABILITY, json.dumps(report).encode())
    got = (await api.get("/v1/reports/survivability", headers=ADMIN)).json()
    assert got == report, "the stored report, not a computation"
    mine = (await api.get("/v1/reports/survivability", headers=MEMBER)).json()
    assert mine["scopes"], "a project's own view is computed for it"


async def test_whatif_estimates_from_the_last_measured_drill(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await world(memstore)
    body = {"mode": "whatif", "scope": {"sites": ["s1"]}}
    [before] = (await api.post("/v1/drills", json=body, headers=OPERATOR)).json()["result"]["vnfs"]
    await memstore.put(keys.RTO_MEASURED, json.dumps({"promote_s": 0.25}).encode())
    [after] = (await api.post("/v1/drills", json=body, headers=OPERATOR)).json()["result"]["vnfs"]
    assert after["rto_s"] == round(before["rto_s"] - 2.0 + 0.25, 3), (before, after)


async def test_a_label_selector_takes_only_the_vnfs_carrying_every_label(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await world(memstore)  # the sample vFirewall: labels app=vfirewall, tier=perimeter

    async def drilled(labels: dict[str, str], mode: str = "whatif") -> httpx.Response:
        body = {"mode": mode, "scope": {"sites": ["s1"]}, "selector": {"labels": labels}}
        return await api.post("/v1/drills", json=body, headers=OPERATOR)

    both = await drilled({"app": "vfirewall", "tier": "perimeter"})
    assert [v["vnf"] for v in both.json()["result"]["vnfs"]] == [VNF]
    assert both.json()["selector"] == {"labels": {"app": "vfirewall", "tier": "perimeter"}}
    assert (await drilled({"app": "vfirewall", "tier": "core"})).json()["result"]["vnfs"] == []
    live = await drilled({"app": "vims"}, "live")
    assert live.status_code == 409 and "no VNF of the drill" in live.text, live.text
    before = await everything(memstore)
    for bad in ({"-x": "y"}, {"app": "v" * 64}, {"app": 3}):
        resp = await drilled(bad)  # type: ignore[arg-type]
        assert resp.status_code == 422 and "selector" in resp.text, resp.text
    assert await everything(memstore) == before


async def test_whatif_image_table_from_the_catalogue(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await world(memstore)
    body = {"mode": "whatif", "scope": {"sites": ["s1"]}}
    [own] = (await api.post("/v1/drills", json=body, headers=OPERATOR)).json()["result"]["vnfs"]
    assert [(i["site"], i["status"]) for i in own["images"]] == [("s3", imagetable.DECLARED)]
    kv = await memstore.get(keys.vnf(VNF))
    assert kv is not None
    rec = codec.decode(model.VnfRecord, kv.value)
    raw = {**rec.descriptor, "sw_images": []}
    raw["vdus"] = [{**raw["vdus"][0], "sw_image": "img-fw"}]
    await memstore.put(kv.key, codec.encode(dataclasses.replace(rec, descriptor=raw)))
    img = cat.Image(cat.ImageId("img-fw"), "fw", 3_000_000_000, "0" * 64, cat.SiteId("s2"))
    await memstore.put(keys.image("img-fw"), cat.Entry(img).encode())
    [line] = (await api.post("/v1/drills", json=body, headers=OPERATOR)).json()["result"]["vnfs"]
    assert line["images"] == [
        {
            "member": "fw-0",
            "site": "s3",
            "image": "img-fw",
            "status": imagetable.REPLICATE,
            "bytes": 3_000_000_000,
            "estimate_s": 30.0,
            "rate_mbps": 100.0,
        }
    ], "no replica measured a rate: images.estimate_rate_mbps"
    active = cat.Replica(img.id, cat.SiteId("s3"), cat.State.ACTIVE, img.size, 50e6)
    await memstore.put(keys.image_replica("img-fw", "s3"), cat.encode_replica(active))
    [line] = (await api.post("/v1/drills", json=body, headers=OPERATOR)).json()["result"]["vnfs"]
    assert line["images"][0]["status"] == imagetable.PRESENT
    await memstore.put(keys.image("img-fw"), b"{not json")
    resp = await api.post("/v1/drills", json=body, headers=OPERATOR)
    assert resp.status_code == 500 and "corrupt" in resp.text, resp.text


async def test_isolate_site_refused_when_a_vnf_outside_the_drill_would_lose_service(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await world(memstore)
    kv = await memstore.get(keys.vnf(VNF))
    assert kv is not None
    rec = codec.decode(model.VnfRecord, kv.value)
    alone = dataclasses.replace(rec, id="v-alone", members=rec.members[:1])  # only at s1
    await memstore.put(keys.vnf(alone.id), codec.encode(alone))
    body = {"mode": "live", "scope": {"sites": ["s1"]}, "vnfs": [VNF], "isolate": "site"}
    before = await everything(memstore)
    resp = await api.post("/v1/drills", json=body, headers=OPERATOR)
    assert resp.status_code == 409 and "v-alone" in resp.text, resp.text
    assert await everything(memstore) == before
    bad = await api.post("/v1/drills", json={**body, "isolate": "region"}, headers=OPERATOR)
    assert bad.status_code == 422, bad.text
    resp = await api.post("/v1/drills", json={**body, "isolate": "none"}, headers=OPERATOR)
    assert resp.status_code == 201 and resp.json()["isolate"] is False, resp.text
    await memstore.delete(keys.drill(resp.json()["id"]))
    await memstore.delete(keys.vnf(alone.id))
    resp = await api.post("/v1/drills", json=body, headers=OPERATOR)
    assert resp.status_code == 201 and resp.json()["isolate"] is True, resp.text
