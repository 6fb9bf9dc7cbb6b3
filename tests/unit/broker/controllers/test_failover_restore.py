"""Restoring redundancy on the in-memory store (issue 10): a lost member is re-placed at a
third site as standby, its quota reserved before and booked when READY; the lost member is
tombstoned only once its replacement is READY, and its usage given back only once its site
confirms the deletion; drains move one VNF at a time; heal re-asks a refused replacement."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

import pytest

from broker.controllers import failover, replacing
from broker.models import codec, objects
from broker.models import vnf as model
from broker.models.site import Health, SiteHealth
from broker.placement import claims as cl
from broker.quotas.headroom import SiteUsage, Unlimited
from broker.settings import BrokerSettings, FailoverSettings
from broker.store import keys
from broker.store.memory import MemoryStore
from broker.store.protocol import Put
from replication import catalog
from tests.support import placement as world
from tests.unit.broker.controllers.test_failover_controller import (
    VNF,
    desired,
    kinds,
    lead,
    record,
    report,
    seed,
)

SITES = [world.SiteDef(s, "r1") for s in ("s1", "s2", "s3")]


class Ledger(Unlimited):
    """Records every give-back with what it gave back."""

    def __init__(self) -> None:
        super().__init__()
        self.given: dict[str, Mapping[str, SiteUsage]] = {}
        self.booked: dict[str, Mapping[str, SiteUsage]] = {}

    async def commit(self, reservation: str, at: Mapping[str, SiteUsage]) -> None:
        await super().commit(reservation, at)
        self.booked[reservation] = at

    async def uncommit(self, reservation: str, at: Mapping[str, SiteUsage]) -> None:
        await super().uncommit(reservation, at)
        self.given[reservation] = at


@pytest.fixture
async def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
async def ctl(memory_store: MemoryStore, ledger: Ledger) -> failover.FailoverController:
    await world.seed_store(memory_store, SITES)
    await seed(memory_store)
    await claim_members(memory_store)
    kv = await memory_store.get(keys.vnf(VNF))
    assert kv is not None
    rec = codec.decode(model.VnfRecord, kv.value)
    booked = dataclasses.replace(rec, reservation="acme-nfv/vnf.v1")
    await memory_store.put(keys.vnf(VNF), codec.encode(booked))
    return failover.FailoverController(
        memory_store, await lead(memory_store), BrokerSettings(), headroom=ledger
    )


async def claim_members(store: MemoryStore) -> None:
    """The seeded members' claims, as the VNF controller's placement wrote them."""
    for site, member in (("s1", "fw-0"), ("s2", "fw-1")):
        ref = f"{VNF}/{member}"
        await store.put(*_put(cl.put(site, {ref: cl.Claim(ref, f"{site}-cmp-000", 0)})))


def _put(put: Put) -> tuple[str, bytes]:
    return put.key, put.value


async def down(store: MemoryStore, ctl: failover.FailoverController, site: str) -> None:
    ctl.health[site] = Health.DOWN
    await store.put(keys.health(site), codec.encode(SiteHealth(site, Health.DOWN, 1)))


async def replace_next(ctl: failover.FailoverController) -> bool:
    req = ctl.replacer.recoveries.next()
    assert req is not None, "a replacement is queued"
    return await ctl.replacer.carry_out(req)


async def test_a_lost_member_is_restored_at_a_third_site(
    memory_store: MemoryStore, ctl: failover.FailoverController, ledger: Ledger
) -> None:
    await down(memory_store, ctl, "s1")
    await ctl.step(VNF)
    await report(memory_store, "s2", "fw-1", 2, "active")  # the standby took over
    assert await replace_next(ctl) is False
    assert ctl.replacer.recoveries.running() == 1, "the slot is held until READY"
    rec = await record(memory_store)
    assert {(m.name, m.site, m.role) for m in rec.members} == {
        ("fw-0", "s1", "standby"),
        ("fw-1", "s2", "active"),
        ("fw-0", "s3", "standby"),
    }
    assert replacing.pending(rec) == {"fw-0@s3": "v1.fw-0.s1.0.s3"}, "reserved before"
    new = await desired(memory_store, "s3", "fw-0")
    assert new.spec["metadata"]["meridian:role"] == "standby"
    claims_kv = await memory_store.get(keys.claims("s3"))
    assert claims_kv is not None and "v1/fw-0" in cl.decode(claims_kv.value)
    assert (await desired(memory_store, "s1", "fw-0")).deleted is False, "nothing deleted yet"

    await ctl.step(VNF)
    assert not (await desired(memory_store, "s1", "fw-0")).deleted, "not before READY"
    assert not ledger.committed

    await report(memory_store, "s3", "fw-0", 1, "standby")
    await ctl.step(VNF)
    assert ledger.committed == {"v1.fw-0.s1.0.s3"}, "booked when READY"
    assert ledger.booked["v1.fw-0.s1.0.s3"]["s3"].amounts["instances"] == 1
    assert (await desired(memory_store, "s1", "fw-0")).deleted, "tombstoned once replaced"
    assert ctl.replacer.recoveries.running() == 0
    assert not ledger.given, "no give-back before the site confirms the deletion"
    rec = await record(memory_store)
    assert rec.state is model.VnfState.ACTIVE and not replacing.pending(rec)

    ctl.health["s1"] = Health.UP  # the site is back and deletes its stale member
    gone = objects.Status("server", f"{VNF}-fw-0", 3, objects.State.DELETED)
    await memory_store.put(keys.observed("s1", "server", f"{VNF}-fw-0"), gone.encode())
    await ctl.step(VNF)
    assert list(ledger.given) == ["acme-nfv/vnf.v1.fw-0.s1.0.gone"]
    assert ledger.given["acme-nfv/vnf.v1.fw-0.s1.0.gone"]["s1"].amounts["instances"] == 1
    rec = await record(memory_store)
    assert {(m.name, m.site) for m in rec.members} == {("fw-1", "s2"), ("fw-0", "s3")}
    doc = json.loads((await memory_store.get(keys.placement(VNF))).value)  # type: ignore[union-attr]
    assert {(a["member"], a["site"]) for a in doc["assignments"]} == {("fw-0", "s3")}
    assert ["s1", "server", f"{VNF}-fw-0"] not in doc["objects"]
    assert "vnf.healed" in await kinds(memory_store)
    old_claims = await memory_store.get(keys.claims("s1"))
    assert old_claims is not None and "v1/fw-0" not in cl.decode(old_claims.value), "claim gone"
    await ctl.step(VNF)
    assert len(ledger.given) == 1, "given back once"


async def test_no_site_left_says_why_and_heal_asks_again(
    memory_store: MemoryStore, ctl: failover.FailoverController
) -> None:
    await down(memory_store, ctl, "s1")
    await down(memory_store, ctl, "s3")
    await ctl.step(VNF)
    await report(memory_store, "s2", "fw-1", 2, "active")
    await replace_next(ctl)
    await ctl.step(VNF)
    rec = await record(memory_store)
    assert rec.state is model.VnfState.DEGRADED
    assert "no replacement" in rec.reason and "no site takes" in rec.reason
    assert ctl.replacer.recoveries.running() == 0

    ctl.health["s3"] = Health.UP
    await memory_store.put(keys.health("s3"), codec.encode(SiteHealth("s3", Health.UP, 2)))
    await memory_store.put(keys.failover_asked(VNF), b'{"action": "heal"}')
    await ctl.step(VNF)
    assert await memory_store.get(keys.failover_asked(VNF)) is None
    assert await replace_next(ctl) is False
    assert (await record(memory_store)).state is model.VnfState.HEALING


async def test_a_full_target_site_holds_the_replacement_back(
    memory_store: MemoryStore, ledger: Ledger
) -> None:
    await world.seed_store(memory_store, SITES)
    await seed(memory_store)
    await claim_members(memory_store)
    settings = dataclasses.replace(BrokerSettings(), failover=FailoverSettings(max_per_site=1))
    ctl = failover.FailoverController(
        memory_store, await lead(memory_store), settings, headroom=ledger
    )
    ctl.replacer.ask("other", "x@s9", 0, 0)  # another VNF's replacement builds at s3
    other = ctl.replacer.recoveries.next()
    assert other is not None and ctl.replacer.recoveries.target("other", "x@s9", "s3")
    await down(memory_store, ctl, "s1")
    await ctl.step(VNF)
    await report(memory_store, "s2", "fw-1", 2, "active")
    assert await replace_next(ctl) is True, "the only fitting site is at its limit: wait"
    assert ("fw-0", "s3") not in {(m.name, m.site) for m in (await record(memory_store)).members}
    ctl.replacer.finish("other", "x@s9")
    ctl.replacer.recoveries.finish(VNF, "fw-0@s1")
    ctl.replacer.ask(VNF, "fw-0@s1", 0, 0)
    assert await replace_next(ctl) is False
    assert ("fw-0", "s3") in {(m.name, m.site) for m in (await record(memory_store)).members}


async def test_a_drain_moves_the_site_off_and_switches_over_first(
    memory_store: MemoryStore, ctl: failover.FailoverController
) -> None:
    await ctl.step(VNF)  # the controller knows the VNF
    ctl._on_drain(keys.drain("s1"), b"{}")
    assert ctl.drains.moving("s1") == VNF
    await ctl.step(VNF)
    old = await desired(memory_store, "s1", "fw-0")
    assert old.spec["metadata"]["meridian:role"] == "standby", "demoted first"
    assert (await desired(memory_store, "s2", "fw-1")).generation == 1, "promoted after"
    assert await replace_next(ctl) is False
    rec = await record(memory_store)
    assert ("fw-0", "s3") in {(m.name, m.site) for m in rec.members}, "never onto s1"
    await report(memory_store, "s1", "fw-0", 2, "standby")
    await ctl.step(VNF)
    assert (await desired(memory_store, "s2", "fw-1")).spec["metadata"]["meridian:role"] == (
        "active"
    )
    ctl._on_drain(keys.drain("s1"), b"")
    assert ctl.drains.moving("s1") == ""


async def test_a_catalogue_image_is_ordered_at_the_target_and_waited_for(
    memory_store: MemoryStore, ctl: failover.FailoverController
) -> None:
    kv = await memory_store.get(keys.vnf(VNF))
    assert kv is not None
    rec = codec.decode(model.VnfRecord, kv.value)
    desc = {**rec.descriptor, "sw_images": []}
    desc["vdus"] = [{**desc["vdus"][0], "sw_image": "vfw-cat"}]
    await memory_store.put(keys.vnf(VNF), codec.encode(dataclasses.replace(rec, descriptor=desc)))
    image = catalog.Image(catalog.ImageId("vfw-cat"), "vfw", 1024, "a" * 64, catalog.SiteId("s2"))
    await memory_store.put(keys.image("vfw-cat"), catalog.Entry(image, targets=()).encode())
    await down(memory_store, ctl, "s1")
    await ctl.step(VNF)
    await report(memory_store, "s2", "fw-1", 2, "active")
    assert await replace_next(ctl) is True, "the image is not at s3 yet: wait"
    entry_kv = await memory_store.get(keys.image("vfw-cat"))
    assert entry_kv is not None
    entry = catalog.Entry.decode(entry_kv.value)
    assert entry.targets == ("s3",) and entry.generation == 2, "ordered at the target"
    assert ("fw-0", "s3") not in {(m.name, m.site) for m in (await record(memory_store)).members}

    active = catalog.Replica(catalog.ImageId("vfw-cat"), catalog.SiteId("s3"), catalog.State.ACTIVE)
    await memory_store.put(keys.image_replica("vfw-cat", "s3"), catalog.encode_replica(active))
    ctl.replacer.recoveries.finish(VNF, "fw-0@s1")
    ctl.replacer.ask(VNF, "fw-0@s1", 0, 0)
    assert await replace_next(ctl) is False
    assert ("fw-0", "s3") in {(m.name, m.site) for m in (await record(memory_store)).members}


async def test_a_server_gone_from_a_serving_site_is_rebuilt_there(
    memory_store: MemoryStore, ctl: failover.FailoverController, ledger: Ledger
) -> None:
    await down(memory_store, ctl, "s3")  # s1 holds the active: s2 alone may take fw-1
    gone = objects.Status(
        "server", f"{VNF}-fw-1", 1, objects.State.FAILED, "gone", outputs={"gone": "true"}
    )
    await memory_store.put(keys.observed("s2", "server", f"{VNF}-fw-1"), gone.encode())
    await ctl.step(VNF)
    assert "vnf.member_lost" in await kinds(memory_store)
    assert await replace_next(ctl) is False
    rec = await record(memory_store)
    m = next(m for m in rec.members if m.name == "fw-1")
    assert (m.site, m.role, m.state, m.generation) == ("s2", "standby", "PENDING", 2)
    assert not replacing.pending(rec), "it keeps the usage the lost member booked"
    server = await desired(memory_store, "s2", "fw-1")
    assert server.generation == 2 and not server.deleted, "a new generation re-creates it"
    assert server.spec["metadata"]["meridian:role"] == "standby"
    assert ctl.replacer.recoveries.running() == 1

    await ctl.step(VNF)  # the old generation's FAILED status is not the rebuilt one's
    rec = await record(memory_store)
    assert rec.state is model.VnfState.HEALING and len(rec.members) == 2, rec.reason
    assert (await kinds(memory_store)).count("vnf.member_lost") == 1

    await report(memory_store, "s2", "fw-1", 2, "standby")
    await ctl.step(VNF)
    rec = await record(memory_store)
    assert rec.state is model.VnfState.ACTIVE, rec.reason
    assert {(m.name, m.site, m.role, m.state) for m in rec.members} == {
        ("fw-0", "s1", "active", "READY"),
        ("fw-1", "s2", "standby", "READY"),
    }
    assert "vnf.healed" in await kinds(memory_store)
    assert not ledger.committed and not ledger.given, "booked once, never given back"
    assert ctl.replacer.recoveries.running() == 0, "its slot is free"
    claims_kv = await memory_store.get(keys.claims("s2"))
    assert claims_kv is not None and cl.decode(claims_kv.value)["v1/fw-1"].ready_ms > 0
    assert not (await desired(memory_store, "s2", "fw-1")).deleted
