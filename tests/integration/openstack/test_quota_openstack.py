"""Global quota against a real OpenStack site: the per-site push lands in Nova and Neutron,
and a server created behind Meridian's back is reconciled.

A federation of etcd, one broker process and two agent processes: ``os-quota`` drives
minicloud site 1 with the openstack driver, ``sim-quota`` is simulated. The tenant is a
Keystone project made for the test, so the usage the agent reports is exactly what the
test created. Checked from outside Meridian: Nova's and Neutron's quota sets with
openstacksdk, and the other site's pushed limits in etcd.

Invariant 7 at the site: a site's quota set is the tenant's global limit minus its usage at
every other site, so what is created directly at the site (out of band) cannot exceed the
global remainder — Nova itself refuses it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import openstack.exceptions as os_exc
import pytest

from broker.store import keys
from broker.store.etcd import EtcdStore
from tests.support.minicloud import CLOUD, Minicloud
from tests.support.osfed import OpenStackFederation, Project, fresh_project
from tests.support.polling import wait_for

pytestmark = [pytest.mark.openstack, pytest.mark.etcd, pytest.mark.slow]

OS_SITE = "os-quota"
SIM_SITE = "sim-quota"
LIMITS = {"instances": 3, "cores": 6, "ram_mb": 2048, "ports": 20, "floating_ips": 3}
SIM_USE = {"instances": 1, "cores": 2, "ram_mb": 512}
TINY = {"instances": 1, "cores": 1, "ram_mb": 128}  # minicloud's mc.tiny flavor


@pytest.fixture(scope="module")
def fed(minicloud: Minicloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    fed = OpenStackFederation(
        state=Path(tmp_path_factory.mktemp("os-quota")),
        brokers=1,
        clouds={OS_SITE: CLOUD},
        labels={OS_SITE: {"driver": "openstack"}, SIM_SITE: {"driver": "sim"}},
    )
    try:
        fed.up([OS_SITE, SIM_SITE])
        states = fed.wait_all_up([OS_SITE, SIM_SITE], timeout=120)
        assert all(states.get(s) == "UP" for s in (OS_SITE, SIM_SITE)), states
        yield fed
    finally:
        fed.down()


@pytest.fixture
def project(minicloud: Minicloud) -> Iterator[Project]:
    with fresh_project(CLOUD, prefix="mq") as found:
        yield found


async def pushed(store: EtcdStore, site: str, tenant: str) -> dict[str, int]:
    """The limits the broker last pushed to ``site`` for ``tenant`` ({} before any)."""
    kv = await store.get(keys.desired(site, "quota", tenant))
    if kv is None:
        return {}
    return {k: int(v) for k, v in json.loads(kv.value)["spec"]["limits"].items()}


def sim_vnf(tenant: str) -> dict[str, Any]:
    """One server of ``SIM_USE``'s size, only where ``driver=sim``."""
    return {
        "apiVersion": "meridian.nfv/v1",
        "kind": "VnfDescriptor",
        "name": "simuse",
        "tenant": tenant,
        "sw_images": [{"name": "img", "size": 1024, "checksum": "ab" * 32}],
        "vdus": [
            {
                "name": "app",
                "sw_image": "img",
                "virtual_compute": {
                    "num_virtual_cpu": SIM_USE["cores"],
                    "virtual_mem_size_mb": SIM_USE["ram_mb"],
                },
            }
        ],
        "selectors": {"driver": "sim"},
    }


def core(limits: dict[str, int]) -> dict[str, int]:
    """The Nova classes of a pushed limit set."""
    return {c: n for c, n in limits.items() if c in TINY}


def expected(minus: dict[str, int]) -> dict[str, int]:
    return {c: LIMITS[c] - minus.get(c, 0) for c in ("instances", "cores", "ram_mb")}


def nova_limits(conn: Any, project_id: str) -> dict[str, int]:
    found = conn.compute.get_quota_set(project_id)
    return {"instances": found.instances, "cores": found.cores, "ram_mb": found.ram}


def boot(project: Project, name: str) -> Any:
    """A server created directly at the site, with openstacksdk: out of band."""
    conn = project.conn
    flavor = conn.compute.find_flavor("mc.tiny", ignore_missing=False)
    image = conn.image.find_image("minicloud-tiny", ignore_missing=False)
    server = conn.compute.create_server(
        name=name, flavor_id=flavor.id, image_id=image.id, networks="none"
    )
    try:
        return conn.compute.wait_for_server(server, status="ACTIVE", wait=120)
    except os_exc.SDKException as exc:  # say what Nova said, not only that it failed
        found = conn.compute.get_server(server.id)
        raise AssertionError(f"{name}: {found.status} {found.fault}") from exc


def reported(fed: OpenStackFederation, tenant: str) -> dict[str, int]:
    usage = fed.api_get(f"/v1/quotas/{tenant}/usage")
    return dict(usage["sites"].get(OS_SITE, {}).get("reported", {}))


def global_used(fed: OpenStackFederation, tenant: str) -> dict[str, int]:
    usage = fed.api_get(f"/v1/quotas/{tenant}/usage")
    return {line["resource"]: int(line["used"]) for line in usage["global"]}


async def test_push_lands_in_nova_and_an_out_of_band_server_shrinks_the_other_site(
    fed: OpenStackFederation, project: Project
) -> None:
    tenant = project.id
    store = EtcdStore.from_settings(fed.etcd_settings())
    admin = project.conn
    try:
        resp = fed.call("PUT", f"/v1/quotas/{tenant}", json={"limits": LIMITS})
        assert resp.status_code == 200, resp.text
        # real usage at the simulated site: a VNF placed there through the broker (its
        # reservation committed there, and the sim agent reporting the server)
        resp = fed.call("POST", "/v1/vnfs", json=sim_vnf(tenant))
        assert resp.status_code == 202, resp.text
        vnf_id = resp.json()["id"]

        def vnf_active() -> bool:
            vnf = fed.api_get(f"/v1/vnfs/{vnf_id}")
            assert vnf["state"] != "FAILED", vnf
            return bool(vnf["state"] == "ACTIVE")

        wait_for(vnf_active, timeout=60, what=f"{vnf_id} ACTIVE at the sim site")

        # 1. the push: the real site's Nova and Neutron quota sets hold the global limit
        #    minus what the tenant uses at the other site
        wait_for(
            lambda: nova_limits(admin, tenant) == expected(SIM_USE),
            timeout=60,
            what=f"Nova quota set {expected(SIM_USE)} at the site",
        )
        neutron = admin.network.get_quota(tenant)
        assert (neutron.ports, neutron.floating_ips) == (20, 3)

        async def other_site_whole() -> bool:  # nothing used elsewhere: the whole limit
            return core(await pushed(store, SIM_SITE, tenant)) == expected({})

        await async_wait(other_site_whole, within=60, what="the sim site's first push")

        # 2. out of band: a server made directly with openstacksdk, not through Meridian
        first = boot(project, "oob-1")
        wait_for(lambda: reported(fed, tenant) == TINY, timeout=60, what="the agent reporting it")

        async def other_site_shrunk() -> bool:
            return core(await pushed(store, SIM_SITE, tenant)) == expected(TINY)

        await async_wait(other_site_shrunk, within=60, what="the sim site's limit shrinking")
        # drift is recorded in the ledger (after the grace period) and raised as an event
        wait_for(
            lambda: global_used(fed, tenant)["instances"] == SIM_USE["instances"] + 1,
            timeout=60,
            what="the ledger counting the out-of-band server",
        )
        events = fed.api_get(f"/v1/events?subject={tenant}&limit=100")["events"]
        drift = [e for e in events if e["kind"] == "quota.drift"]
        assert drift and f"site {OS_SITE}: " in drift[-1]["message"], events
        assert "instances reported 1 vs committed 0 (+1)" in drift[-1]["message"]
        metrics = fed.call("GET", "/metrics").text
        assert 'meridian_quota_drift_events_total{resource="instances"}' in metrics
        # admission sees it: only 1 instance is left globally
        over = fed.call(
            "POST",
            f"/v1/quotas/{tenant}/reservations",
            json={"deltas": {"instances": 2}, "ttl": 30, "idempotency_key": "too-many"},
        )
        assert over.status_code == 409, over.text
        assert "instances" in over.json()["detail"] and "1 left" in over.json()["detail"]

        # 3. the site enforces the remainder itself: its quota set (global 3 - 1 at the sim
        #    site = 2) lets one more direct server in, not two
        assert nova_limits(admin, tenant)["instances"] == 2
        second = boot(project, "oob-2")
        with pytest.raises(os_exc.HttpException, match=r"(?i)quota") as refused:
            boot(project, "oob-3")
        assert refused.value.status_code == 403

        # 4. out-of-band deletions reconcile too: the other site's limit grows back
        for server in (first, second):
            admin.compute.delete_server(server)
        wait_for(lambda: not reported(fed, tenant), timeout=60, what="the usage report emptying")

        async def other_site_restored() -> bool:
            return core(await pushed(store, SIM_SITE, tenant)) == expected({})

        await async_wait(other_site_restored, within=60, what="the sim site's limit restored")
        wait_for(
            lambda: global_used(fed, tenant)["instances"] == SIM_USE["instances"],
            timeout=60,
            what="the ledger's drift adjustment clearing",
        )
    finally:
        await store.close()


async def async_wait(check: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {within:.0f}s")
