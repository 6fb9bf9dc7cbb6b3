"""Deleting a VNF with a member at a DOWN site (issue 10): what is reachable is deleted
and given back at once; the DOWN site's member keeps its claim and its usage until the site
confirms the deletion (it resumes with the tombstone) or the operator forgets the site —
the give-back rule of failover — and the delete never waits forever."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from broker.controllers.vnfs import COMMITTED, VnfController
from broker.models import codec, objects
from broker.models import vnf as model
from broker.models.site import Health, SiteHealth
from broker.placement import claims as cl
from broker.placement.snapshot import Snapshot
from broker.quotas.headroom import SiteUsage, Unlimited
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.support import placement as P

VNF = "fw-000001"
SITES = [P.SiteDef(s, "r1") for s in ("s1", "s2", "s3")]


class Ledger(Unlimited):
    def __init__(self) -> None:
        super().__init__()
        self.given: dict[str, Mapping[str, SiteUsage]] = {}

    async def uncommit(self, reservation: str, at: Mapping[str, SiteUsage]) -> None:
        await super().uncommit(reservation, at)
        self.given[reservation] = at


async def record(store: MemoryStore) -> model.VnfRecord | None:
    kv = await store.get(keys.vnf(VNF))
    return codec.decode(model.VnfRecord, kv.value) if kv is not None else None


async def status(store: MemoryStore, m: model.MemberStatus, state: objects.State) -> None:
    server = f"{VNF}-{m.name}"
    gen = 1 if state is objects.State.READY else 2
    found = objects.Status("server", server, gen, state, outputs={"role": m.role})
    await store.put(keys.observed(m.site, "server", server), found.encode())


async def claims_at(store: MemoryStore, site: str) -> list[str]:
    kv = await store.get(keys.claims(site))
    return sorted(m for m in cl.decode(kv.value) if m.startswith(VNF)) if kv else []


async def steps(ctl: VnfController, n: int = 6) -> None:
    for _ in range(n):
        await ctl.step(VNF)


@pytest.fixture
async def active() -> tuple[MemoryStore, VnfController, Ledger]:
    """An ACTIVE active-standby pair over two of three sites, its usage booked."""
    store = MemoryStore()
    await P.seed_store(store, SITES)
    desc = P.sample("vfirewall")
    rec = model.VnfRecord(VNF, desc.tenant, model.to_json(desc))
    await store.put(keys.vnf(VNF), codec.encode(rec))
    ledger = Ledger()
    ctl = VnfController(store, await store.put(keys.LEADER, b"b1"), headroom=ledger)
    ctl.kick = lambda vnf_id: None  # type: ignore[method-assign]  # the test steps it
    ctl.snap = await Snapshot.load(store)
    await steps(ctl, 3)
    placed = await record(store)
    assert placed is not None and len(placed.members) == 2
    for m in placed.members:
        await status(store, m, objects.State.READY)
    await steps(ctl, 2)
    done = await record(store)
    assert done is not None and done.state is model.VnfState.ACTIVE and done.extra[COMMITTED]
    return store, ctl, ledger


async def delete_with_one_site_down(
    store: MemoryStore, ctl: VnfController
) -> tuple[model.VnfRecord, model.MemberStatus, model.MemberStatus]:
    """The active member's site goes DOWN, the VNF is deleted, the other site deletes its
    member; returns the record before, the member at the DOWN site and the other one."""
    rec = await record(store)
    assert rec is not None
    lost, kept = rec.members
    await store.put(keys.health(lost.site), codec.encode(SiteHealth(lost.site, Health.DOWN, 1)))
    ctl.snap = await Snapshot.load(store)
    await store.put(keys.vnf(VNF), codec.encode(dataclasses.replace(rec, deleted=True)))
    await steps(ctl, 2)  # every object tombstoned, the DOWN site's too
    assert (await record(store)) is not None
    await status(store, kept, objects.State.DELETED)  # the reachable site deletes
    await steps(ctl)
    return rec, lost, kept


async def test_a_member_at_a_down_site_is_settled_when_it_confirms_or_is_forgotten(
    active: tuple[MemoryStore, VnfController, Ledger],
) -> None:
    store, ctl, ledger = active
    rec, lost, kept = await delete_with_one_site_down(store, ctl)
    rec = await record(store)
    assert rec is not None, "the DOWN site's member is not confirmed deleted yet"
    assert rec.state is model.VnfState.DELETING
    assert [(m.name, m.site) for m in rec.members] == [(lost.name, lost.site)]
    assert await claims_at(store, kept.site) == [], "the reachable member's claim is released"
    assert await claims_at(store, lost.site) == [f"{VNF}/{lost.name}"], "kept until confirmed"
    suffix = f".{kept.name}.{kept.site}.{kept.placed_ms}.gone"
    gone = [k for k in ledger.given if k.endswith(suffix)]
    assert len(gone) == 1 and len(ledger.given) == 1, ledger.given
    assert set(ledger.given[gone[0]]) == {kept.site}, "only the reachable member's usage"
    tomb = await store.get(keys.desired(lost.site, "server", f"{VNF}-{lost.name}"))
    assert tomb is not None and objects.Desired.decode(tomb.value).deleted, "it resumes deleting"

    await steps(ctl)  # nothing more while the site stays DOWN
    assert len(ledger.given) == 1 and await record(store) is not None

    await store.delete(keys.site(lost.site))  # the operator forgets the site
    ctl.snap = await Snapshot.load(store)
    await steps(ctl)
    assert await record(store) is None, "torn down: a forgotten site confirms nothing again"
    assert await claims_at(store, lost.site) == []
    assert rec.reservation in ledger.given
    assert set(ledger.given[rec.reservation]) == {lost.site}, "the rest given back, once"


async def test_the_down_site_confirming_the_deletion_settles_the_rest(
    active: tuple[MemoryStore, VnfController, Ledger],
) -> None:
    store, ctl, ledger = active
    rec, lost, kept = await delete_with_one_site_down(store, ctl)
    assert await record(store) is not None

    await store.put(keys.health(lost.site), codec.encode(SiteHealth(lost.site, Health.UP, 2)))
    ctl.snap = await Snapshot.load(store)
    await steps(ctl)
    assert await record(store) is not None, "UP but not confirmed: still waiting"
    await status(store, lost, objects.State.DELETED)  # it resumed with the tombstone
    await steps(ctl)
    assert await record(store) is None
    assert await claims_at(store, lost.site) == [] and await claims_at(store, kept.site) == []
    assert set(ledger.given[rec.reservation]) == {lost.site}
    assert len(ledger.given) == 2, "each member's usage given back once"
