"""A VNF's provider VLAN links get their segmentation ids from the fenced VLAN allocator:
allocated per site and physnet when the descriptor gives none, validated when it does (an
id another VNF holds at the site is a refusal that says so), given back on delete."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from broker.controllers import deadlines
from broker.controllers.vnfs import VnfController
from broker.models import codec, objects
from broker.models import vnf as model
from broker.settings import StitchingSettings
from broker.stitching.ledger import HELD, SEGMENTS
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.support import placement as P

SITES = P.regions(1, regions=2)


def firewall(name: str, untrust: int | None = None) -> dict[str, Any]:
    data = model.to_json(P.sample("vfirewall"))
    data["name"] = name
    if untrust is not None:
        data["virtual_links"][1]["segmentation_id"] = untrust
    return data


async def world() -> tuple[MemoryStore, VnfController]:
    store = MemoryStore()
    await P.seed_store(store, SITES, P.paris_latency(SITES))
    settings = StitchingSettings(vlan_range=(100, 199))
    ctl = VnfController(store, await store.put(keys.LEADER, b"me"), stitching=settings)
    ctl.snap = await ctl.live.current()
    return store, ctl


async def place(store: MemoryStore, ctl: VnfController, data: dict[str, Any]) -> model.VnfRecord:
    record = model.VnfRecord(data["name"], data["tenant"], data, created_ms=int(time.time() * 1e3))
    await store.put(keys.vnf(record.id), codec.encode(record))
    await ctl.step(record.id)
    kv = await store.get(keys.vnf(record.id))
    assert kv is not None
    return codec.decode(model.VnfRecord, kv.value)


async def segments(store: MemoryStore, vnf_id: str) -> dict[tuple[str, str], int]:
    """(site, link) → the segmentation id of the VNF's network there."""
    kvs, _ = await store.get_prefix(keys.DESIRED)
    out = {}
    for kv in kvs:
        site, kind, name = keys.split_object(kv.key)
        spec = objects.Desired.decode(kv.value).spec
        if kind == "network" and name.startswith(f"{vnf_id}-") and "segmentation_id" in spec:
            out[(site, name.removeprefix(f"{vnf_id}-"))] = int(spec["segmentation_id"])
    return out


async def test_allocated_when_absent_validated_when_given_released_on_delete() -> None:
    store, ctl = await world()
    one = await place(store, ctl, firewall("fw-one"))
    assert one.state is model.VnfState.PLACED, one.reason
    got = await segments(store, "fw-one")
    sites = sorted({m.site for m in one.members})
    assert sorted(got) == [(s, link) for s in sites for link in ("trust", "untrust")]
    for site in sites:  # one physnet per site: its two links hold two different ids
        assert got[(site, "trust")] != got[(site, "untrust")]
    assert all(100 <= v <= 199 for v in got.values())

    two = await place(store, ctl, firewall("fw-two", untrust=150))
    assert two.state is model.VnfState.PLACED, two.reason
    assert {
        v for (_, link), v in (await segments(store, "fw-two")).items() if link == "untrust"
    } == {150}

    clash = await place(store, ctl, firewall("fw-three", untrust=150))
    assert clash.state is model.VnfState.FAILED
    assert "VLAN ids: vlan ids of" in clash.reason and "150 is held by fw-two" in clash.reason
    assert await segments(store, "fw-three") == {}
    outside = await place(store, ctl, firewall("fw-four", untrust=4000))
    assert outside.state is model.VnfState.FAILED and "4000 is outside 100..199" in outside.reason

    kv = await store.get(keys.vnf("fw-two"))
    assert kv is not None
    gone = codec.decode(model.VnfRecord, kv.value)
    await store.put(kv.key, codec.encode(dataclasses.replace(gone, deleted=True)))
    for _ in range(3):
        await ctl.step("fw-two")
    assert await store.get(keys.vnf("fw-two")) is None
    held, _ = await store.get_prefix(HELD)
    assert sorted({kv.value for kv in held}) == [b"fw-one"]
    assert [kv.key for kv in (await store.get_prefix(SEGMENTS))[0]] == [f"{SEGMENTS}fw-one"]
    again = await place(store, ctl, firewall("fw-five", untrust=150))  # 150 is free again
    assert again.state is model.VnfState.PLACED, again.reason


async def test_a_moved_member_keeps_the_ids_it_held_and_gets_new_ones_at_its_new_site() -> None:
    store = MemoryStore()
    sites = P.regions(2)
    await P.seed_store(store, sites, P.paris_latency(sites))
    limits = deadlines.Limits(ready_timeout_ms=1_000, max_attempts=3)
    ctl = VnfController(store, await store.put(keys.LEADER, b"me"), limits=limits)
    ctl.snap = await ctl.live.current()
    now = [1_000_000]
    ctl.clock = lambda: now[0]
    rec = await place(store, ctl, firewall("fw-move"))
    assert rec.state is model.VnfState.PLACED, rec.reason

    async def moved() -> model.MemberStatus:
        now[0] += 1_000
        await ctl.step("fw-move")
        await ctl.drain()
        kv = await store.get(keys.vnf("fw-move"))
        assert kv is not None
        return next(m for m in codec.decode(model.VnfRecord, kv.value).members if m.name == "fw-0")

    for _ in range(2):  # each deadline moves it (another host or site, then another site)
        before = await segments(store, "fw-move")
        m = await moved()
        after = await segments(store, "fw-move")
        assert all(after[k] == v for k, v in before.items() if k in after), "an id changed"
        assert sorted(link for (site, link) in after if site == m.site) == ["trust", "untrust"]
        for site, link in before:  # networks already there are not revised
            kv = await store.get(keys.desired(site, "network", f"fw-move-{link}"))
            assert kv is not None and objects.Desired.decode(kv.value).generation == objects.FIRST
        at_site = [(site, v) for (site, _), v in after.items()]
        assert len(at_site) == len(set(at_site)), "one id twice at one site"
    assert m.attempts == 3 and len({site for site, _ in after}) == 3
