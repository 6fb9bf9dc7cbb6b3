"""Attacks on the broker's own quota holds through the REST API, and what they change.

The VNF controller holds a PLACED VNF's quota as ``vnf.<id>`` in the tenant's ledger.
Before the fix a member DELETEd that hold (200 ``released``): the VNF stayed PLACED, the
controller retried forever, and a second VNF went over the limit; a member's negative
reservation was accepted (201) and committed (200), giving itself quota. Now: 403/422,
and the ledger is exactly as it was.
"""

from __future__ import annotations

import httpx
import pytest

from broker.quotas.headroom import SiteUsage
from broker.quotas.headroom import LedgerHeadroom
from broker.quotas.ledgerstore import StoreLedger
from broker.store import keys
from broker.store.memory import MemoryStore
from quota.ledger import Ledger
from quota.models import TenantId
from tests.unit.broker.api.apitest_support import ADMIN, MEMBER, OPERATOR, assert_problem

MINE = "p-max"  # the member's own project (apitest_support.principal)
PATH = f"/v1/quotas/{MINE}/reservations"
VNF = {"instances": 1, "cores": 4, "pinned_cores": 8}


async def quota_keys(store: MemoryStore) -> list[tuple[str, bytes, int]]:
    items, _ = await store.get_prefix(keys.QUOTA)
    return [(kv.key, kv.value, kv.mod_revision) for kv in items]


@pytest.fixture
async def placed(api: httpx.AsyncClient, memstore: MemoryStore) -> Ledger:
    """A tenant at its pinned-core limit: the controller holds a PLACED VNF's quota."""
    resp = await api.put(f"/v1/quotas/{MINE}", json={"limits": {"pinned_cores": 8}},
                         headers=ADMIN)
    assert resp.status_code == 200, resp.text
    leader = Ledger(StoreLedger(memstore))  # the leader replica's ledger
    held = await LedgerHeadroom(leader).reserve(MINE, VNF, "vnf-a")
    assert held == f"{MINE}/vnf.vnf-a"
    return leader


@pytest.mark.parametrize("headers", [MEMBER, OPERATOR, ADMIN], ids=["member", "operator", "admin"])
async def test_nobody_settles_the_controllers_hold_through_the_api(
    api: httpx.AsyncClient, memstore: MemoryStore, placed: Ledger, headers: dict[str, str]
) -> None:
    before = await quota_keys(memstore)
    attacks = [
        await api.delete(f"{PATH}/vnf.vnf-a", headers=headers),
        await api.post(f"{PATH}/vnf.vnf-a/commit", headers=headers),
        await api.post(f"{PATH}/vnf.vnf-a/commit", headers=headers, json={"site": "edge-1"}),
        # squatting the id of a VNF about to be placed
        await api.post(PATH, headers=headers,
                       json={"deltas": {"cores": 1}, "idempotency_key": "vnf.vnf-b"}),
    ]
    for resp in attacks:
        assert_problem(resp, 403, detail_has="held by the broker")
    assert await quota_keys(memstore) == before, "the ledger is exactly as it was"
    view = await placed.view(TenantId(MINE))
    assert set(view.holds) == {"vnf.vnf-a"}
    # and the limit still holds: one pinned core more is refused
    more = await api.post(PATH, headers=headers, json={"deltas": {"pinned_cores": 1}})
    assert_problem(more, 409, field="deltas.pinned_cores")
    assert await quota_keys(memstore) == before


async def test_a_negative_reservation_is_refused_and_gives_nothing(
    api: httpx.AsyncClient, memstore: MemoryStore, placed: Ledger
) -> None:
    before = await quota_keys(memstore)
    for headers in (MEMBER, ADMIN):
        resp = await api.post(PATH, headers=headers, json={"deltas": {"pinned_cores": -8}})
        assert_problem(resp, 422, field="deltas.pinned_cores", detail_has="negative")
        mixed = {"deltas": {"pinned_cores": 4, "cores": -4}, "idempotency_key": "mine-1"}
        assert_problem(await api.post(PATH, headers=headers, json=mixed), 422,
                       field="deltas.cores")
    assert (await api.post(f"{PATH}/mine-1/commit", headers=MEMBER)).status_code == 410
    assert await quota_keys(memstore) == before


async def test_the_broker_itself_still_gives_quota_back(placed: Ledger) -> None:
    """The refusals are the API's: the controller's own hold commits and is undone."""
    headroom = LedgerHeadroom(placed)
    at = {"edge-1": SiteUsage("eu", VNF)}
    await headroom.commit(f"{MINE}/vnf.vnf-a", at)
    await headroom.uncommit(f"{MINE}/vnf.vnf-a", at)
    view = await placed.view(TenantId(MINE))
    assert view.holds == {} and view.account.used("pinned_cores") == 0
