"""End to end: a lost site's VNFs fail over, are restored elsewhere, and the lost site is
fenced when it returns (issue 10).

A real federation (etcd, 3 brokers, 6 sim agents over mTLS): a vFirewall pair goes ACTIVE;
the agent of the site holding the active member is killed with ``kill -9`` (closed stream)
— and for a second pair paused with SIGSTOP (silent loss). The standby's own agent
reports the promoted role; redundancy is restored at a third site (the new member joins
as standby); the lost site comes back (restarted / SIGCONT) and its stale member is
demoted, then deleted, never reporting active. Checked on etcd's full history: at no
revision do two members report active, and the tenant's quota ledger is never over its
(tight) limit, and the lost member's usage is given back exactly once. A drain moves a
VNF off a site with a switchover first; undrain ends it.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

import pytest
import yaml

from broker.devfed.federation import Federation
from broker.models import objects
from broker.store import keys
from broker.store.etcd import EtcdStore
from tests.e2e.conftest import SITES
from tests.e2e.test_vnf import active, call
from tests.support import placement as P
from tests.support import failover_history as fh
from tests.support import quota_history as qh
from tests.support.polling import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MEMBER_CORES = 4  # vfirewall: 4 cores per member


def create(fed: Federation, tenant: str) -> str:
    """A vFirewall pair for ``tenant`` (one tenant per test: each starts with no usage
    and limits no replica has cached)."""
    body = {**yaml.safe_load((P.SAMPLES / "vfirewall.yaml").read_text()), "tenant": tenant}
    resp = call(fed, "POST", "/v1/vnfs", json=body)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def roles(vnf: dict[str, Any]) -> dict[str, str]:
    return {m["site"]: m["role"] for m in vnf["members"] if m.get("state") != "LOST"}


def member_at(vnf: dict[str, Any], site: str) -> str:
    return next(str(m["name"]) for m in vnf["members"] if m["site"] == site)


def promoted(fed: Federation, vnf_id: str, standby: str) -> dict[str, Any]:
    """Wait until the standby at ``standby`` reports the active role (failover completed)."""

    def probe() -> dict[str, Any] | None:
        vnf: dict[str, Any] = fed.api_get(f"/v1/vnfs/{vnf_id}")
        done = vnf["state"] in ("HEALING", "ACTIVE", "DEGRADED")
        return vnf if done and roles(vnf).get(standby) == "active" else None

    return wait_for(probe, timeout=60, what=f"{vnf_id}: standby at {standby} promoted")


def restored(fed: Federation, vnf_id: str, gone: set[str]) -> dict[str, Any]:
    """Wait until the VNF is ACTIVE again with two READY members, none at ``gone``."""

    def probe() -> dict[str, Any] | None:
        vnf: dict[str, Any] = fed.api_get(f"/v1/vnfs/{vnf_id}")
        live = [m for m in vnf["members"] if m.get("state") == "READY"]
        sites = {m["site"] for m in live}
        if vnf["state"] == "ACTIVE" and len(live) == 2 and not sites & gone:
            return vnf
        return None

    return wait_for(probe, timeout=120, what=f"{vnf_id} restored away from {sorted(gone)}")


def deleted_at(fed: Federation, vnf_id: str, site: str) -> None:
    """Wait until no member of the VNF is listed at ``site`` (its deletion confirmed)."""

    def probe() -> bool:
        vnf = fed.api_get(f"/v1/vnfs/{vnf_id}")
        return all(m["site"] != site for m in vnf["members"])

    wait_for(probe, timeout=90, what=f"{vnf_id}'s stale member at {site} deleted")


async def revision(fed: Federation) -> int:
    store = EtcdStore.from_settings(fed.etcd_settings())
    try:
        _, rev = await store.get_prefix(keys.LEADER)
        return rev
    finally:
        await store.close()


def cores_used(fed: Federation, tenant: str) -> int:
    """The tenant's committed cores, as its ledger in etcd says (no replica's cache)."""
    ledgers = asyncio.run(qh.quota_now(fed))[1]
    return ledgers[tenant].used("cores") if tenant in ledgers else 0


def quota_room(fed: Federation, tenant: str, cores: int) -> None:
    """Every class roomy but ``cores``: exactly ``cores`` (the tenant uses nothing yet)."""
    room = dict.fromkeys(["pinned_cores", "ram_mb", "hugepages_mb", "sriov_vfs"], 10**6)
    room["cores"] = cores
    resp = call(fed, "PUT", f"/v1/quotas/{tenant}", json={"limits": room})
    assert resp.status_code == 200, resp.text


async def check_history(
    fed: Federation, vnf_id: str, lost: str, start: int, quota: Any, lost_at: int
) -> dict[str, Any]:
    """Dual-active and quota checks over etcd's history from ``start`` to now."""
    store = EtcdStore.from_settings(fed.etcd_settings())
    try:
        end = await store.put(keys.QUOTA + "zz-end", b"")  # the quota replay ends here
        observed = await fh.history(store, keys.OBSERVED, start, end)
        health = await fh.history(store, keys.HEALTH, start, end)
        most, seen = fh.most_active([*observed, *health], vnf_id)
        limits, ledgers, holds, at = quota
        committed: Counter[str] = Counter()
        revisions, _ = await qh.replay(store, at + 1, end, limits, ledgers, holds, committed)
        stale = keys.observed(lost, "server", f"{vnf_id}-")
        writes = [
            objects.Status.decode(e.value)
            for e in observed
            if e.key.startswith(stale) and e.value and e.mod_revision > lost_at
        ]
        desired = await fh.history(store, keys.desired(lost, "server", f"{vnf_id}-"), start, end)
    finally:
        await store.close()
    return {
        "most_active": most,
        "statuses": seen,
        "quota_revisions": revisions,
        "commits": committed,
        "stale_writes": writes,
        "stale_desired": [objects.Desired.decode(e.value) for e in desired if e.value],
    }


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["kill-9", "sigstop"])
def test_a_lost_site_fails_over_restores_and_is_fenced_when_back(
    federation: Federation, sig: signal.Signals
) -> None:
    quota = asyncio.run(qh.quota_now(federation))
    start = quota[3]
    tenant = f"fo-{sig.name.lower()}"
    quota_room(federation, tenant, 3 * MEMBER_CORES)  # the pair and one replacement, no more
    fw = create(federation, tenant)
    vnf = active(federation, fw)
    site = next(s for s, r in roles(vnf).items() if r == "active")
    standby = next(s for s, r in roles(vnf).items() if r == "standby")
    agent = f"agent-{site}"
    lost_at = asyncio.run(revision(federation))
    started = time.monotonic()
    federation.kill(agent, sig)
    try:
        promoted(federation, fw, standby)
        took = time.monotonic() - started
        # generous: the silent path waits out site health's down_after (3 s here)
        assert took < 30, f"promotion took {took:.1f} s"
        if sig == signal.SIGSTOP:
            federation.kill(agent, signal.SIGCONT)  # back before its replacement is READY
        after = restored(federation, fw, {site})
    finally:
        if sig == signal.SIGSTOP:
            federation.kill(agent, signal.SIGCONT)
    third = next(s for s in roles(after) if s not in (site, standby))
    assert roles(after) == {standby: "active", third: "standby"}, after["members"]
    if sig == signal.SIGKILL:
        federation.start_agents([site])  # the lost site returns
    deleted_at(federation, fw, site)
    assert cores_used(federation, tenant) == 2 * MEMBER_CORES, "no usage lost or kept"

    found = asyncio.run(check_history(federation, fw, site, start, quota, lost_at))
    assert found["statuses"] > 0
    assert found["most_active"] == 1, "two members reported active at one revision"
    gone = [rid for rid in found["commits"] if rid.endswith(".gone.undo")]
    assert len(gone) == 1 and found["commits"][gone[0]] == 1, found["commits"]
    assert all(n == 1 for n in found["commits"].values()), found["commits"]
    writes = found["stale_writes"]
    assert all(w.outputs.get("role") != "active" for w in writes), writes
    if writes:
        assert writes[-1].state is objects.State.DELETED, writes[-1]
    wanted = found["stale_desired"]
    assert [d.deleted for d in wanted][-1] is True, "the stale member is tombstoned"
    demoted = next(
        i
        for i, d in enumerate(wanted)
        if d.spec.get("metadata", {}).get("meridian:role") == "standby"
    )
    assert demoted < len(wanted) - 1, "demoted before it was deleted"
    events = federation.api_get(f"/v1/events?subject={fw}&limit=100")["events"]
    kinds = [e["kind"] for e in events]
    assert kinds.count("vnf.failover_started") == 1 and "vnf.healed" in kinds, kinds


def test_the_next_leader_completes_a_failover(federation: Federation) -> None:
    """The leader is killed right after the site: the next one promotes, once."""
    quota_room(federation, "fo-leader", 3 * MEMBER_CORES)
    fw = create(federation, "fo-leader")
    vnf = active(federation, fw)
    site = next(s for s, r in roles(vnf).items() if r == "active")
    standby = next(s for s, r in roles(vnf).items() if r == "standby")
    leader = str(federation.api_get("/v1/leader")["leader"])
    federation.kill(f"agent-{site}", signal.SIGKILL)
    federation.kill(leader, signal.SIGKILL)
    promoted(federation, fw, standby)
    restored(federation, fw, {site})
    assert str(federation.api_get("/v1/leader")["leader"]) != leader
    events = federation.api_get(f"/v1/events?subject={fw}&limit=100")["events"]
    started = [e for e in events if e["kind"] == "vnf.failover_started"]
    assert len(started) == 1, events
    vnf = federation.api_get(f"/v1/vnfs/{fw}")
    assert sorted(m["site"] for m in vnf["members"]).count(site) <= 1, "placed once"
    federation.start_agents([site])
    federation.start_broker(leader)
    deleted_at(federation, fw, site)


def test_drain_moves_a_vnf_off_with_a_switchover_first(federation: Federation) -> None:
    federation.wait_all_up(SITES, timeout=60)
    quota_room(federation, "fo-drain", 3 * MEMBER_CORES)
    fw = create(federation, "fo-drain")
    vnf = active(federation, fw)
    site = next(s for s, r in roles(vnf).items() if r == "active")
    start = asyncio.run(revision(federation))
    resp = call(federation, "POST", f"/v1/sites/{site}/drain")
    assert resp.status_code == 202, resp.text
    assert fw in resp.json()["vnfs"]
    try:
        after = restored(federation, fw, {site})
        deleted_at(federation, fw, site)
    finally:
        resp = call(federation, "POST", f"/v1/sites/{site}/undrain")
    assert resp.status_code == 202 and resp.json()["was_draining"] is True, resp.text
    assert sorted(roles(after).values()) == ["active", "standby"]
    store = EtcdStore.from_settings(federation.etcd_settings())

    async def replay() -> tuple[int, int]:
        try:
            _, end = await store.get_prefix(keys.LEADER)
            observed = await fh.history(store, keys.OBSERVED, start, end)
            return fh.most_active(observed, fw)
        finally:
            await store.close()

    most, seen = asyncio.run(replay())
    assert seen > 0 and most == 1, "a planned switchover is never dual-active"
    kinds = [e["kind"] for e in federation.api_get(f"/v1/events?subject={fw}&limit=100")["events"]]
    assert "vnf.failover_completed" in kinds, kinds
    resp = call(federation, "POST", "/v1/sites/nowhere/drain")
    assert resp.status_code == 404, resp.text
