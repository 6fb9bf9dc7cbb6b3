"""End to end: members that fail during their first placement are moved (issue 10 item 7).

A real federation (etcd, 3 brokers, 6 sim agents). Before a vFirewall is created, the
sims' control files fail every host of the site its plan gives ``fw-0`` and the one host
it gives ``fw-1``: each member's server fails for good on its planned host ("the planned
host ... is down", as Nova answers for a forced host whose compute is down). The leader
re-places each member — another host first, then another site — and the VNF becomes
ACTIVE, its claims where its members run. A retry under the same Idempotency-Key is the
same VNF.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import yaml

from broker.devfed.federation import Federation
from broker.models import codec
from broker.models.inventory import Inventory
from broker.placement import claims as cl
from broker.store import keys
from broker.store.etcd import EtcdStore
from tests.e2e.test_vnf import active, call
from tests.support import placement as P

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def etcd_read(fed: Federation, sites: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """(site → its host names, every claimed member) as etcd holds them."""
    store = EtcdStore.from_settings(fed.etcd_settings())
    try:
        hosts = {}
        for site in sites:
            kv = await store.get(keys.inventory(site))
            assert kv is not None, f"no inventory for {site}"
            hosts[site] = [h.name for h in codec.decode(Inventory, kv.value).hosts]
        claimed: list[str] = []
        for kv in (await store.get_prefix(keys.CLAIMS))[0]:
            site = keys.name_in(keys.CLAIMS, kv.key)
            claimed += [f"{site}:{member}" for member in cl.decode(kv.value)]
        return hosts, claimed
    finally:
        await store.close()


def keyed_create(fed: Federation, body: dict[str, Any], key: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {fed.token}", "Idempotency-Key": key}
    return httpx.post(
        fed.api_url() + "/v1/vnfs", json=body, headers=headers, timeout=10.0, verify=fed.api_verify
    )


def test_members_failing_on_their_planned_hosts_are_moved(federation: Federation) -> None:
    room = dict.fromkeys(["cores", "pinned_cores", "ram_mb", "hugepages_mb", "sriov_vfs"], 10**6)
    resp = call(federation, "PUT", "/v1/quotas/acme-nfv", json={"limits": room})
    assert resp.status_code == 200, resp.text
    body = yaml.safe_load((P.SAMPLES / "vfirewall.yaml").read_text())
    dry = call(federation, "POST", "/v1/vnfs?dry_run=true", json=body)
    assert dry.status_code == 200 and dry.json()["feasible"], dry.text
    plan = {a["member"]: (a["site"], a["host"]) for a in dry.json()["plan"]["assignments"]}
    (whole, _), (other, other_host) = plan["fw-0"], plan["fw-1"]
    planned = [whole, other]
    hosts, _ = asyncio.run(etcd_read(federation, planned))
    # fw-0: every host of its site is down (another host fails too, then the site is
    # avoided); fw-1: only its planned host is down
    for site, down in ((whole, hosts[whole]), (other, [other_host])):
        path = federation.sim_control(site)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({"failed_hosts": down}))
    try:
        resp = keyed_create(federation, body, "deadlines-e2e-1")
        assert resp.status_code == 202, resp.text
        again = keyed_create(federation, body, "deadlines-e2e-1")
        assert (again.status_code, again.json()) == (202, resp.json())
        fw = str(resp.json()["id"])
        try:
            vnf: dict[str, Any] = active(federation, fw)
        except AssertionError as exc:
            events = federation.api_get(f"/v1/events?subject={fw}&limit=100")["events"]
            told = "\n".join(f"{e['kind']}: {e['message']}" for e in events)
            raise AssertionError(f"{exc}\nevents of {fw}:\n{told}") from None
    finally:
        for site in planned:
            federation.sim_control(site).unlink(missing_ok=True)
    members = {m["name"]: m for m in vnf["members"]}
    assert members["fw-0"]["site"] != whole, members
    assert members["fw-1"]["host"] != other_host, members
    assert all(m["attempts"] >= 2 and m["avoid_hosts"] for m in members.values()), members
    assert all(m["state"] == "READY" and not m["given_up"] for m in members.values()), members
    events = federation.api_get(f"/v1/events?subject={fw}&limit=100")["events"]
    lost = [e for e in events if e["kind"] == "vnf.member_lost"]
    assert len(lost) >= 2 and all("is down" in e["message"] for e in lost), lost
    _, claimed = asyncio.run(etcd_read(federation, planned))
    mine = [c for c in claimed if f":{fw}/" in c]
    assert sorted(c.split(":")[0] for c in mine) == sorted(m["site"] for m in members.values())
    listed = federation.api_get("/v1/vnfs")["vnfs"]
    assert [v["id"] for v in listed if v["id"].startswith("vfirewall-")] == [fw]
