"""``/v1/networks`` with the stitching controller running on the same in-memory store.

The agents are played at our own seam: a loop that answers every ``network_stitch`` and
``network_verify`` desired object with the status an agent would report (what the real
agent does to the kernel is proven in tests/integration/test_datapath_netns.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest

from broker.controllers.stitching import ENDPOINT, ENDPOINT_NAME, STITCH, StitchingController
from broker.stitching.ledger import HELD, RECORDS
from broker.models import codec, objects, vnf
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.support import placement as P
from tests.support.stitchfed import SETTINGS, SITES, agents, seed
from tests.unit.broker.api.apitest_support import ADMIN, MEMBER, assert_problem, client_for


@pytest.fixture
async def fed() -> AsyncIterator[tuple[MemoryStore, httpx.AsyncClient]]:
    store = MemoryStore()
    fence = await seed(store)
    ctl = StitchingController(store, fence, SETTINGS)
    tasks = [asyncio.create_task(ctl.run()), asyncio.create_task(agents(store))]
    async with client_for(store) as client:
        yield store, client
    for t in tasks:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t
    await store.close()


def body(name: str = "sync", **over: object) -> dict[str, object]:
    return {"name": name, "tenant": "p-max", "type": "l2-stretched", "sites": SITES, **over}


async def eventually(client: httpx.AsyncClient, url: str, want: str) -> dict[str, object]:
    for _ in range(300):
        resp = await client.get(url, headers=ADMIN)
        if resp.status_code == 200 and resp.json()["state"] == want:
            return dict(resp.json())
        await asyncio.sleep(0.02)
    raise AssertionError(f"{url} never became {want}: {resp.text}")


async def test_create_verify_delete(fed: tuple[MemoryStore, httpx.AsyncClient]) -> None:
    store, api = fed
    resp = await api.post("/v1/networks", json=body(), headers=MEMBER)
    assert resp.status_code == 201, resp.text
    net = resp.json()
    assert (net["cidr"], net["mtu"], net["route_target"]) == ("10.50.0.0/24", 1450, "64512:1")
    assert [s["site"] for s in net["segments"]] == SITES
    for site in SITES:
        assert await store.get(keys.desired(site, STITCH, "sync")) is not None
    shown = await eventually(api, "/v1/networks/sync", "READY")
    assert shown["site_status"] == dict.fromkeys(SITES, "READY")
    listed = (await api.get("/v1/networks", headers=MEMBER)).json()["networks"]
    assert [n["id"] for n in listed] == ["sync"]

    checked = await api.post("/v1/networks/sync/verify", headers=MEMBER)
    assert checked.status_code == 200, checked.text
    report = checked.json()
    assert report["ok"] and report["missing"] == [] and len(report["pairs"]) == 6

    assert (await api.delete("/v1/networks/sync", headers=MEMBER)).status_code == 202
    for _ in range(300):
        if await store.get(keys.network("sync")) is None:
            break
        await asyncio.sleep(0.02)
    assert await store.get(keys.network("sync")) is None
    assert (await store.get_prefix(RECORDS))[0] == []  # the allocation is given back
    left, _ = await store.get_prefix(keys.desired("east"))
    assert [kv.key for kv in left] == [keys.desired("east", ENDPOINT, ENDPOINT_NAME)]


@pytest.mark.parametrize(
    ("over", "status", "field", "says"),
    [
        ({"sites": ["east", "mars"]}, 422, "sites", "not registered: mars"),
        ({"sites": ["east", "bare"]}, 422, "sites", "site bare has no gateway endpoint"),
        ({"mtu": 40}, 422, "mtu", "below the VXLAN tunnel overhead"),
        ({"mtu": 1480}, 422, "mtu", "at most 1450"),
        ({"cidr": "10.50.1.0/26"}, 409, None, "overlaps 10.50.1.0/25 (external)"),
        ({"type": "l2"}, 422, "type", "is not one of"),
        ({"cidr": "10.50.0.0/30"}, 422, None, "a network needs a /29 or larger"),
    ],
)
async def test_bad_input_is_refused_and_leaves_nothing(
    fed: tuple[MemoryStore, httpx.AsyncClient],
    over: dict[str, object],
    status: int,
    field: str | None,
    says: str,
) -> None:
    store, api = fed
    resp = await api.post("/v1/networks", json=body(**over), headers=MEMBER)
    assert_problem(resp, status, field=field, detail_has=says)
    assert (await store.get_prefix(keys.NETWORKS))[0] == []
    assert (await store.get_prefix(RECORDS))[0] == []
    assert (await store.get_prefix(HELD))[0] == []
    desired, _ = await store.get_prefix(keys.DESIRED)
    assert [kv.key for kv in desired if STITCH in kv.key] == []


async def test_exhaustion_says_what_is_left_and_a_name_is_taken_once(
    fed: tuple[MemoryStore, httpx.AsyncClient],
) -> None:
    _, api = fed
    assert (await api.post("/v1/networks", json=body("a"), headers=MEMBER)).status_code == 201
    again = await api.post("/v1/networks", json=body("a"), headers=MEMBER)
    assert_problem(again, 409, detail_has="already exists")
    full = await api.post("/v1/networks", json=body("b"), headers=MEMBER)
    assert_problem(full, 409, detail_has="no free /24 in 10.50.0.0/23 (free there: 128 addresses")
    small = await api.post("/v1/networks", json=body("c", cidr="/26"), headers=MEMBER)
    assert small.status_code == 201 and small.json()["cidr"] == "10.50.1.128/26"


async def test_a_member_cannot_create_for_another_tenant(
    fed: tuple[MemoryStore, httpx.AsyncClient],
) -> None:
    _, api = fed
    resp = await api.post("/v1/networks", json=body(tenant="p-other"), headers=MEMBER)
    assert_problem(resp, 403)


async def test_an_endpoint_that_moves_rebuilds_its_peers_tunnels(
    fed: tuple[MemoryStore, httpx.AsyncClient],
) -> None:
    store, api = fed
    assert (await api.post("/v1/networks", json=body(), headers=MEMBER)).status_code == 201
    await eventually(api, "/v1/networks/sync", "READY")
    moved = objects.Status(
        ENDPOINT,
        ENDPOINT_NAME,
        1,
        objects.State.READY,
        outputs={"address": "198.51.100.7", "mtu": "1500"},
    )
    await store.put(keys.observed("east", ENDPOINT, ENDPOINT_NAME), moved.encode())
    for _ in range(300):
        kv = await store.get(keys.desired("west", STITCH, "sync"))
        assert kv is not None
        want = objects.Desired.decode(kv.value)
        if want.generation == 2:
            break
        await asyncio.sleep(0.02)
    assert want.generation == 2
    assert "198.51.100.7" in want.spec["links"][0]["peers"]
    await eventually(api, "/v1/networks/sync", "READY")


def placed_vnf(vnf_id: str, sites: list[str]) -> vnf.VnfRecord:
    """A VNF with a stitched ``sync`` link, placed as the VNF controller writes it."""
    desc = vnf.to_json(P.sample("stitched-pair"))
    members = tuple(
        vnf.MemberStatus(f"sig-{i}", "sig", role, site, "h1", 0)
        for i, (role, site) in enumerate(zip(["active", "standby"], sites, strict=True))
    )
    return vnf.VnfRecord(
        vnf_id, "p-max", desc, state=vnf.VnfState.PLACED, members=members, created_ms=1
    )


async def test_a_vnfs_stitched_link_is_a_network_that_goes_with_the_vnf(
    fed: tuple[MemoryStore, httpx.AsyncClient],
) -> None:
    store, api = fed
    record = placed_vnf("sp-1", ["east", "west"])
    await store.put(keys.vnf("sp-1"), codec.encode(record))
    net = await eventually(api, "/v1/networks/sp-1-sync", "READY")
    assert net["sites"] == ["east", "west"] and net["vnfs"] == ["sp-1"]
    assert net["ports"] == {"east": ["sp-1-sig-0-sync"], "west": ["sp-1-sig-1-sync"]}
    for site, seg in zip(["east", "west"], net["segments"], strict=True):  # type: ignore[call-overload]
        kv = await store.get(keys.desired(site, STITCH, "sp-1-sync"))
        assert kv is not None
        spec = objects.Desired.decode(kv.value).spec
        assert spec["project"] == "p-max"
        address = f"{seg['allocation_pool'][0]}/{net['cidr'].split('/')[1]}"  # type: ignore[index, attr-defined]
        assert spec["ports"] == [{"name": f"sp-1-sig-{site == 'west':d}-sync", "address": address}]

    refused = await api.delete("/v1/networks/sp-1-sync", headers=MEMBER)
    assert_problem(refused, 409, detail_has="used by VNF sp-1")
    assert refused.json()["vnfs"] == ["sp-1"]
    assert (await api.get("/v1/networks/sp-1-sync", headers=ADMIN)).json()["deleted"] is False

    # the standby moves within the network's sites: its port follows
    moved = dataclasses.replace(
        record, members=(record.members[0], dataclasses.replace(record.members[1], site="east"))
    )
    await store.put(keys.vnf("sp-1"), codec.encode(moved))
    for _ in range(300):
        shown = (await api.get("/v1/networks/sp-1-sync", headers=ADMIN)).json()
        if shown["ports"] == {"east": ["sp-1-sig-0-sync", "sp-1-sig-1-sync"]}:
            break
        await asyncio.sleep(0.02)
    assert shown["ports"] == {"east": ["sp-1-sig-0-sync", "sp-1-sig-1-sync"]}, shown

    await store.delete(keys.vnf("sp-1"))  # the VNF is gone: its network goes too
    for _ in range(300):
        if (await api.get("/v1/networks/sp-1-sync", headers=ADMIN)).status_code == 404:
            break
        await asyncio.sleep(0.02)
    assert (await api.get("/v1/networks/sp-1-sync", headers=ADMIN)).status_code == 404
    assert (await store.get_prefix(RECORDS))[0] == [] and (await store.get_prefix(HELD))[0] == []


async def test_a_vnfs_network_waits_for_a_site_without_gateway_and_goes_with_the_vnf(
    fed: tuple[MemoryStore, httpx.AsyncClient],
) -> None:
    store, api = fed
    await store.put(keys.vnf("sp-2"), codec.encode(placed_vnf("sp-2", ["east", "bare"])))
    for _ in range(300):
        shown = (await api.get("/v1/networks/sp-2-sync", headers=ADMIN)).json()
        if shown.get("reason"):
            break
        await asyncio.sleep(0.02)
    assert shown["state"] == "PENDING", shown
    assert shown["reason"].startswith("waiting: site bare has no gateway endpoint"), shown
    assert (await store.get_prefix(RECORDS))[0] == []
    await store.delete(keys.vnf("sp-2"))
    for _ in range(300):
        if (await api.get("/v1/networks/sp-2-sync", headers=ADMIN)).status_code == 404:
            break
        await asyncio.sleep(0.02)
    assert (await api.get("/v1/networks/sp-2-sync", headers=ADMIN)).status_code == 404
