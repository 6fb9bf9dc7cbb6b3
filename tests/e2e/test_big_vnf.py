"""End to end: a 60-member VNF with 4 connection points each places, goes ACTIVE and is
deleted (issue 10 item 8) on a real federation (etcd, 3 brokers, 6 sim agents).

Its ~390 desired objects cannot ride in one etcd transaction (128 operations at most):
the claims, record and placement land together with what fits, the rest in fenced
batches (``broker.controllers.batches``). Checked in etcd: every object written once,
every member claimed once, and after deletion nothing of it is left.
"""

from __future__ import annotations

import asyncio

import pytest

from broker.devfed.federation import Federation
from broker.placement import claims as cl
from broker.store import keys
from broker.store.etcd import EtcdStore
from tests.e2e.test_vnf import active, call
from tests.support import placement as P
from tests.support.polling import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def held(fed: Federation, vnf_id: str) -> tuple[list[int], list[str]]:
    """(version of each of the VNF's desired objects, its claimed members) in etcd."""
    store = EtcdStore.from_settings(fed.etcd_settings())
    try:
        desired, _ = await store.get_prefix(keys.DESIRED)
        versions = [kv.version for kv in desired if f"/{vnf_id}-" in kv.key]
        claimed = []
        for kv in (await store.get_prefix(keys.CLAIMS))[0]:
            claimed += [m for m in cl.decode(kv.value) if m.startswith(f"{vnf_id}/")]
        return versions, claimed
    finally:
        await store.close()


def test_a_60_member_vnf_places_converges_and_deletes(federation: Federation) -> None:
    room = dict.fromkeys(["instances", "cores", "ram_mb"], 10**6)
    resp = call(federation, "PUT", "/v1/quotas/acme-nfv", json={"limits": room})
    assert resp.status_code == 200, resp.text
    resp = call(federation, "POST", "/v1/vnfs", json=P.big())
    assert resp.status_code == 202, resp.text
    vnf_id = str(resp.json()["id"])
    vnf = active(federation, vnf_id)
    assert len(vnf["members"]) == 60
    assert all(m["state"] == "READY" for m in vnf["members"])
    versions, claimed = asyncio.run(held(federation, vnf_id))
    assert len(versions) > 3 * 100 and set(versions) == {1}, "an object written twice"
    assert sorted(claimed) == sorted(f"{vnf_id}/{m['name']}" for m in vnf["members"])
    assert call(federation, "DELETE", f"/v1/vnfs/{vnf_id}").status_code == 202

    def gone() -> bool | None:
        return True if call(federation, "GET", f"/v1/vnfs/{vnf_id}").status_code == 404 else None

    wait_for(gone, timeout=120, what=f"{vnf_id} deleted")
    versions, claimed = asyncio.run(held(federation, vnf_id))
    assert claimed == []
    assert set(versions) <= {2}, "every object tombstoned once (the agents remove them)"
