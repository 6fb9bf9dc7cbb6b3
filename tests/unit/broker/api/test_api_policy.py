"""The role policy: the shipped file, its parser, and attack tests at the API.

A Keystone ``reader`` cannot create or delete; an operator of region A cannot see or act
on region B; an ``admin`` in a project that is not the admin project is not
federation-wide. Each refusal is a 403 problem and leaves the store as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import errors
from broker.api import auth, policy
from broker.api.auth import Principal
from broker.models import codec
from broker.models import vnf as model
from broker.models.site import SiteSpec
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.support import placement as P
from tests.unit.broker.api.apitest_support import (
    ADMIN,
    TOKENS,
    TableAuthenticator,
    assert_problem,
    bearer,
    client_for,
)
from tests.unit.broker.api.test_api_keystone import FakeResponse, FakeSession, token_body

REPO = Path(__file__).resolve().parents[4]
EU = policy.Scope(frozenset({"eu"}), frozenset())
CALLERS = {
    **TOKENS,
    "reader-token": Principal("rita", "p-rita", frozenset({"reader"})),
    "eu-operator": Principal("otto", "p-noc", frozenset({"operator"}), EU),
}
READER = bearer("reader-token")
EU_OP = bearer("eu-operator")


def test_the_shipped_policy_file_is_the_default() -> None:
    shipped = policy.load(REPO / "deploy/policy/policy.toml")
    assert shipped == policy.Policy()
    assert policy.load("") == policy.Policy()


def test_a_bad_policy_file_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        'admin_project = 3\nbogus = 1\n[roles]\nadmin = "root"\n'
        '[operators.noc]\nregions = []\n[operators.x]\nregions = "eu"\n'
    )
    with pytest.raises(errors.SettingsError) as caught:
        policy.load(path)
    text = "\n".join(caught.value.problems)
    for expected in ("admin_project", "bogus", "roles.admin", "operators.noc", "operators.x"):
        assert expected in text


def test_operator_scope_comes_from_the_policy() -> None:
    noc = {"noc": {"regions": ["eu"]}}
    rules = policy.parse({"admin_project": "cloud-admin", "operators": noc})
    assert rules.grant("id-noc", "noc", ["operator"]) == policy.Grant(frozenset({"operator"}), EU)
    assert rules.grant("id-x", "x", ["operator"]).roles == {"reader"}
    home = rules.grant("id-a", "cloud-admin", ["operator", "admin"])
    assert home.roles == {"operator", "admin"} and home.scope.everywhere
    assert rules.grant("id-a", "admin", ["admin"]).roles == {"member"}  # not the admin project


@pytest.fixture
async def seeded(memstore: MemoryStore) -> MemoryStore:
    for site, region in (("eu-1", "eu"), ("us-1", "us")):
        await memstore.put(keys.site(site), codec.encode(SiteSpec(id=site, region=region)))
    return memstore


async def test_reader_cannot_create_or_delete(seeded: MemoryStore) -> None:
    desc = model.to_json(P.sample("vfirewall"))
    desc["tenant"] = "p-rita"
    async with client_for(seeded, TableAuthenticator(CALLERS)) as api:
        assert (await api.get("/v1/sites", headers=READER)).status_code == 200
        assert (await api.get("/v1/quotas/p-rita", headers=READER)).status_code == 200
        assert (await api.get("/v1/vnfs", headers=READER)).status_code == 200
        before = seeded.revision
        writes = [
            api.post("/v1/vnfs", json=desc, headers=READER),
            api.delete("/v1/vnfs/anything", headers=READER),
            api.post("/v1/quotas/p-rita/reservations", json={"deltas": {}}, headers=READER),
            api.post("/v1/quotas/p-rita/reservations/r1/commit", headers=READER),
            api.delete("/v1/quotas/p-rita/reservations/r1", headers=READER),
            api.post("/v1/sites", json={"id": "x", "region": "eu"}, headers=READER),
        ]
        for call in writes:
            assert_problem(await call, 403, detail_has="rita has reader")
        assert_problem(await api.get("/v1/quotas/p-other", headers=READER), 403)
        assert seeded.revision == before


async def _vnf_at(store: MemoryStore, site: str) -> str:
    member = model.MemberStatus("m0", "fw", "active", site, "h1", 0)
    record = model.VnfRecord(f"vnf-{site}", "p-max", {}, members=(member,))
    await store.put(keys.vnf(record.id), codec.encode(record))
    return record.id


async def test_operator_of_region_a_cannot_act_on_region_b(seeded: MemoryStore) -> None:
    ours, theirs = await _vnf_at(seeded, "eu-1"), await _vnf_at(seeded, "us-1")
    async with client_for(seeded, TableAuthenticator(CALLERS)) as api:
        listed = (await api.get("/v1/sites", headers=EU_OP)).json()["sites"]
        assert [s["id"] for s in listed] == ["eu-1"]
        assert (await api.get("/v1/sites/eu-1", headers=EU_OP)).status_code == 200
        assert_problem(await api.get("/v1/sites/us-1", headers=EU_OP), 403, detail_has="region eu")
        vnfs = (await api.get("/v1/vnfs", headers=EU_OP)).json()["vnfs"]
        assert [v["id"] for v in vnfs] == [ours]
        before, stored = seeded.revision, await seeded.get(keys.vnf(theirs))
        reserve = {"deltas": {"cores": 1}, "site": "us-1"}
        refused = [
            api.post("/v1/quotas/p-max/reservations", json=reserve, headers=EU_OP),
            api.delete(f"/v1/vnfs/{theirs}", headers=EU_OP),
            api.get(f"/v1/vnfs/{theirs}", headers=EU_OP),
            api.get(f"/v1/vnfs/{theirs}/explain", headers=EU_OP),
        ]
        for call in refused:
            assert_problem(await call, 403, detail_has="not site us-1")
        assert seeded.revision == before and await seeded.get(keys.vnf(theirs)) == stored
        ok = {"deltas": {"cores": 1}, "site": "eu-1"}
        resp = await api.post("/v1/quotas/p-max/reservations", json=ok, headers=EU_OP)
        assert resp.status_code == 201, resp.text
        assert (await api.delete(f"/v1/vnfs/{ours}", headers=EU_OP)).status_code == 202
        assert (await api.delete(f"/v1/vnfs/{theirs}", headers=ADMIN)).status_code == 202


async def test_admin_role_outside_the_admin_project_is_not_federation_wide(
    seeded: MemoryStore,
) -> None:
    session = FakeSession(
        {
            "tenant-admin": FakeResponse(200, token_body("admin", project="nfv")),
            "cloud-admin": FakeResponse(200, token_body("admin", project="admin")),
        }
    )
    ks = auth.KeystoneAuthenticator(session, keystone_url="http://k")
    site = {"id": "eu-2", "region": "eu"}
    async with client_for(seeded, ks) as api:
        before = seeded.revision
        tenant_admin = bearer("tenant-admin")
        assert_problem(await api.post("/v1/sites", json=site, headers=tenant_admin), 403)
        assert_problem(await api.delete("/v1/sites/eu-1", headers=tenant_admin), 403)
        assert_problem(await api.get("/v1/quotas/someone-else", headers=tenant_admin), 403)
        assert_problem(await api.get("/v1/events", headers=tenant_admin), 403)
        assert (await api.get("/v1/quotas/proj-1", headers=tenant_admin)).status_code == 200
        assert seeded.revision == before
        resp = await api.post("/v1/sites", json=site, headers=bearer("cloud-admin"))
        assert resp.status_code == 201, resp.text


async def test_policy_file_reaches_keystone_mode(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('admin_project = "ops"\n[operators.nfv]\nregions = ["eu"]\n')
    rules = policy.load(path)
    session = FakeSession({"t": FakeResponse(200, token_body("operator", project="nfv"))})
    who = await auth.KeystoneAuthenticator(session, role_policy=rules).authenticate("t")
    assert who.roles == {"operator"} and who.scope == EU
