"""``/v1/images`` over the in-memory store: register, show with replicas, replicate, and
problem+json that names the field (nothing written on bad input)."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from broker.models import codec
from broker.models.site import SiteSpec
from broker.store import keys
from broker.store.memory import MemoryStore
from replication import catalog
from replication.catalog import Entry, ImageId, Replica, SiteId
from tests.unit.broker.api.apitest_support import ADMIN, MEMBER, OPERATOR

SHA = hashlib.sha256(b"bytes").hexdigest()


def body(**extra: Any) -> dict[str, Any]:
    return {
        "id": "cirros-1",
        "name": "cirros",
        "size": 5,
        "sha256": SHA,
        "source_site": "src",
        **extra,
    }


async def sites(store: MemoryStore) -> None:
    for site, region in (("src", "eu"), ("eu-2", "eu"), ("us-1", "us")):
        await store.put(keys.site(site), codec.encode(SiteSpec(id=site, region=region)))


async def test_register_show_and_list(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    await sites(memstore)
    resp = await api.post(
        "/v1/images", json=body(policy="region=eu", replicate_to=["us-1"]), headers=ADMIN
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"] == "/v1/images/cirros-1"
    kv = await memstore.get(keys.image("cirros-1"))
    assert kv is not None
    entry = Entry.decode(kv.value)
    assert (entry.policy, entry.targets, entry.generation) == ("region=eu", ("us-1",), 1)
    replica = Replica(ImageId("cirros-1"), SiteId("src")).queue()
    await memstore.put(keys.image_replica("cirros-1", "src"), catalog.encode_replica(replica))
    shown = (await api.get("/v1/images/cirros-1", headers=OPERATOR)).json()
    assert shown["sha256"] == SHA and shown["targets"] == ["us-1"]
    assert [(r["site"], r["state"]) for r in shown["replicas"]] == [("src", "queued")]
    listed = (await api.get("/v1/images", headers=OPERATOR)).json()["images"]
    assert listed == [
        {
            "id": "cirros-1",
            "name": "cirros",
            "size": 5,
            "source_site": "src",
            "policy": "region=eu",
            "states": {"queued": 1},
        }
    ]
    again = await api.post("/v1/images", json=body(), headers=ADMIN)
    assert again.status_code == 409


async def test_replicate_adds_targets_and_bumps_the_generation(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await sites(memstore)
    assert (await api.post("/v1/images", json=body(), headers=ADMIN)).status_code == 201
    resp = await api.post(
        "/v1/images/cirros-1/replicate",
        json={"to": ["us-1"], "selector": "region=eu"},
        headers=ADMIN,
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["requested"] == ["eu-2", "src", "us-1"]
    kv = await memstore.get(keys.image("cirros-1"))
    assert kv is not None
    entry = Entry.decode(kv.value)
    assert entry.targets == ("eu-2", "src", "us-1") and entry.generation == 2


async def problem(resp: httpx.Response, status: int, field: str | None) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    if field is not None:
        assert resp.json()["field"] == field, resp.json()


async def test_bad_input_names_the_field_and_writes_nothing(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await sites(memstore)
    cases = [
        (body(source_site="nowhere"), "source_site"),
        (body(sha256="ABC"), "sha256"),
        (body(id="../x"), "id"),
        (body(size=-1), "size"),
        (body(disk_format="floppy"), "disk_format"),
        (body(policy="region"), "policy"),
        (body(replicate_to=["src", "mars"]), "replicate_to[1]"),
    ]
    for sent, field in cases:
        await problem(await api.post("/v1/images", json=sent, headers=ADMIN), 422, field)
    kvs, _ = await memstore.get_prefix(keys.IMAGES)
    assert kvs == []
    assert (await api.post("/v1/images", json=body(), headers=ADMIN)).status_code == 201
    url = "/v1/images/cirros-1/replicate"
    await problem(await api.post(url, json={"to": ["mars"]}, headers=ADMIN), 422, "to[0]")
    await problem(await api.post(url, json={}, headers=ADMIN), 422, "to")
    await problem(
        await api.post(url, json={"selector": "region=mars"}, headers=ADMIN), 422, "selector"
    )
    await problem(
        await api.post("/v1/images/nope/replicate", json={"to": ["src"]}, headers=ADMIN),
        404,
        None,
    )
    await problem(await api.get("/v1/images/nope", headers=ADMIN), 404, None)
    kv = await memstore.get(keys.image("cirros-1"))
    assert kv is not None and Entry.decode(kv.value).generation == 1


async def test_members_may_not_register(api: httpx.AsyncClient, memstore: MemoryStore) -> None:
    await sites(memstore)
    assert (await api.post("/v1/images", json=body(), headers=MEMBER)).status_code == 403


async def test_show_says_which_path_each_copy_takes(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    from broker.models import objects

    await sites(memstore)
    assert (await api.post("/v1/images", json=body(), headers=ADMIN)).status_code == 201
    for site, path, attempt in (("eu-2", "direct", 1), ("us-1", "relay", 1), ("src", "relay", 9)):
        r = Replica(ImageId("cirros-1"), SiteId(site), generation=0).queue().start(source="src")
        await memstore.put(keys.image_replica("cirros-1", site), catalog.encode_replica(r))
        report = objects.CopyReport(attempt, "transferring", path=path)
        await memstore.put(keys.image_copy(site, "cirros-1"), report.encode())
    shown = (await api.get("/v1/images/cirros-1", headers=OPERATOR)).json()
    paths = {r["site"]: r["path"] for r in shown["replicas"]}
    assert paths == {"eu-2": "direct", "us-1": "relay", "src": ""}  # src: an older attempt's
