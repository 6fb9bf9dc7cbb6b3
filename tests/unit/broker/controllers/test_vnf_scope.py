"""A VNF created by a scoped operator is placed only inside the operator's scope: the
scope rides on the record and is a checker in the controller's chain (the route does not
plan, so it cannot check the plan's sites)."""

from __future__ import annotations

import time

from broker.controllers.vnfs import VnfController
from broker.models import codec
from broker.models import vnf as model
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.support import placement as P

SITES = P.regions(2)


async def placed(scope: tuple[tuple[str, ...], tuple[str, ...]] | None) -> model.VnfRecord:
    store = MemoryStore()
    await P.seed_store(store, SITES, P.paris_latency(SITES))
    controller = VnfController(store, await store.put(keys.LEADER, b"me"))
    controller.snap = await controller.live.current()
    desc = P.sample("vfirewall")
    now = int(time.time() * 1000)
    record = model.VnfRecord("fw-1", desc.tenant, model.to_json(desc), created_ms=now,
                             scope=scope)
    await store.put(keys.vnf(record.id), codec.encode(record))
    await controller.step(record.id)
    kv = await store.get(keys.vnf(record.id))
    assert kv is not None
    return codec.decode(model.VnfRecord, kv.value)


async def test_a_scoped_operators_vnf_stays_inside_the_scope() -> None:
    anywhere = await placed(None)
    assert anywhere.state is model.VnfState.PLACED, anywhere.reason
    regions = {s.id: s.region for s in SITES}
    one_site = anywhere.members[0].site
    inside = await placed(((regions[one_site],), ()))
    if inside.state is model.VnfState.PLACED:
        assert {regions[m.site] for m in inside.members} == {regions[one_site]}
    else:
        assert "scope" in inside.reason, inside.reason
    nowhere = await placed((("no-such-region",), ()))
    assert nowhere.state is model.VnfState.FAILED and "scope" in nowhere.reason
    assert nowhere.members == ()
