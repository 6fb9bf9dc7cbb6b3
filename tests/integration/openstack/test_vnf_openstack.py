"""Geo-redundant VNFs placed through the broker onto real OpenStack sites and a sim site.

A federation of etcd, one broker process and three agent processes: ``os-vnf`` drives
minicloud site 1 (two computes) with the openstack driver, ``sim-vnf`` is simulated and
registered as the dearer site (a ``cost`` label; the descriptor weighs cost only), and
``os-vnf-2`` drives minicloud site 2, dearest of all. The first VNF:

- ``ctl``: an active-standby pair with site anti-affinity — one member per site (geo);
- ``fwd``: two members with host anti-affinity — both at the cheap real site, where Nova's
  own scheduler must keep them apart.

Checked from outside Meridian with openstacksdk: the ``fwd`` servers are ACTIVE members of
one Nova server group whose policy is anti-affinity, on the two different computes; the
flavor carries the VDU's extra specs. Deleting the VNF through the API leaves no server.

A second VNF selects the two OpenStack sites (a label selector): its active/standby pair
lands one member in each site's Nova, each in that site's server group of the VDU (the
tenant is one Keystone project name, made at both sites' Keystones).

The image: the descriptor names bytes by sha256; the site already holds them (a Meridian
upload, as replication would leave), and the agent copies them into the VNF's own image,
verifying both checksums again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siteagent import models
from siteagent.drivers.openstack import OpenStackDriver
from siteagent.drivers.openstack_support import cloud_name, connect
from tests.support.minicloud import CLOUD, Minicloud
from tests.support.osfed import OpenStackFederation, Project, fresh_project
from tests.support.polling import wait_for

pytestmark = [pytest.mark.openstack, pytest.mark.etcd, pytest.mark.slow]

OS_SITE = "os-vnf"
SIM_SITE = "sim-vnf"
OS_SITE2 = "os-vnf-2"
CLOUD2 = "minicloud-site2"


@pytest.fixture(scope="module")
def fed(minicloud: Minicloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    fed = OpenStackFederation(
        state=Path(tmp_path_factory.mktemp("os-vnf")),
        brokers=1,
        clouds={OS_SITE: CLOUD, OS_SITE2: CLOUD2},
        labels={
            OS_SITE: {"tier": "core", "cost": "1", "cloud": "openstack"},
            SIM_SITE: {"tier": "core", "cost": "10"},
            OS_SITE2: {"tier": "core", "cost": "100", "cloud": "openstack"},
        },
    )
    sites = [OS_SITE, SIM_SITE, OS_SITE2]
    try:
        fed.up(sites)
        states = fed.wait_all_up(sites, timeout=180)
        assert all(states.get(s) == "UP" for s in sites), states
        yield fed
    finally:
        fed.down()


@pytest.fixture
def project(minicloud: Minicloud) -> Iterator[Project]:
    with fresh_project(CLOUD, prefix="mv") as found:
        yield found


@pytest.fixture
async def held_image(minicloud: Minicloud, tmp_path: Path) -> Any:
    """1 MiB of random bytes the site holds as a Meridian image; yields (size, sha256)."""
    data = os.urandom(1 << 20)
    digest = hashlib.sha256(data).hexdigest()
    source = tmp_path / "gw.img"
    source.write_bytes(data)
    seeder = OpenStackDriver(f"seed{digest[:8]}", CLOUD, timeout=60.0)
    spec = {"disk_format": "raw", "size": len(data), "sha256": digest, "source": str(source)}
    status = await seeder.apply(models.DesiredObject("image", "gw", 1, spec))
    assert status.state is not models.ObjectState.FAILED, status
    try:
        yield len(data), digest
    finally:
        await seeder.delete("image", "gw")
        await seeder.close()


def descriptor(tenant: str, size: int, digest: str) -> dict[str, Any]:
    compute = {"num_virtual_cpu": 1, "virtual_mem_size_mb": 128, "virtual_disk_gb": 1}
    return {
        "apiVersion": "meridian.nfv/v1",
        "kind": "VnfDescriptor",
        "name": "vgw",
        "tenant": tenant,
        "sw_images": [{"name": "gw", "disk_format": "raw", "size": size, "checksum": digest}],
        "virtual_links": [{"name": "mgmt"}],
        "vdus": [
            {
                "name": "ctl",
                "sw_image": "gw",
                "virtual_compute": compute,
                "connection_points": [{"name": "mgmt", "virtual_link": "mgmt"}],
                "redundancy": {"model": "active-standby"},
                "anti_affinity": "site",
            },
            {
                "name": "fwd",
                "sw_image": "gw",
                "virtual_compute": compute,
                "redundancy": {"model": "n+k", "n": 1, "k": 1},
                "anti_affinity": "host",
            },
        ],
        "preferences": {"strategy": "spread", "weights": {"utilization": 0, "cost": 1}},
    }


def test_geo_redundant_vnf_lands_in_a_nova_anti_affinity_group_over_both_computes(
    fed: OpenStackFederation, project: Project, held_image: tuple[int, str]
) -> None:
    tenant = project.id
    limits = {"instances": 20, "cores": 40, "ram_mb": 65536, "ports": 50}
    resp = fed.call("PUT", f"/v1/quotas/{tenant}", json={"limits": limits})
    assert resp.status_code == 200, resp.text
    resp = fed.call("POST", "/v1/vnfs", json=descriptor(tenant, *held_image))
    assert resp.status_code == 202, resp.text
    vnf_id = resp.json()["id"]

    def settled() -> dict[str, Any] | None:
        vnf: dict[str, Any] = fed.api_get(f"/v1/vnfs/{vnf_id}")
        return vnf if vnf["state"] in ("ACTIVE", "FAILED") else None

    vnf = wait_for(settled, timeout=240, what=f"{vnf_id} ACTIVE", every=1.0)
    assert vnf["state"] == "ACTIVE", (vnf["reason"], vnf["members"])
    sites = {m["name"]: m["site"] for m in vnf["members"]}
    ctl = {site for name, site in sites.items() if name.startswith("ctl")}
    fwd = {site for name, site in sites.items() if name.startswith("fwd")}
    assert ctl == {OS_SITE, SIM_SITE}, vnf["members"]  # geo-redundant: one per site
    assert fwd == {OS_SITE}, vnf["members"]  # the cheap real site takes both

    admin = connect(cloud=CLOUD)
    try:
        group = next(
            g
            for g in admin.compute.server_groups(all_projects=True)
            if g.name == cloud_name(OS_SITE, f"{vnf_id}-fwd")
        )
        policy = group.policy if group.policy else (group.policies or [""])[0]
        assert policy == "anti-affinity"
        assert group.project_id == tenant
        servers = [admin.compute.get_server(sid) for sid in group.member_ids]
        assert len(servers) == 2
        assert {s.status for s in servers} == {"ACTIVE"}
        hosts = {s.compute_host for s in servers}
        assert hosts == {"site1-compute1", "site1-compute2"}, hosts
        flavor = admin.compute.find_flavor(cloud_name(OS_SITE, f"{vnf_id}-fwd"))
        assert admin.compute.fetch_flavor_extra_specs(flavor).extra_specs == {
            "hw:cpu_policy": "shared",
            "hw:mem_page_size": "small",
            "hw:numa_nodes": "1",
        }
        # the broker's view agrees with Nova's
        observed = {m["name"]: m["observed_host"] for m in vnf["members"] if m["site"] == OS_SITE}
        assert {observed[n] for n in observed if n.startswith("fwd")} == hosts

        resp = fed.call("DELETE", f"/v1/vnfs/{vnf_id}")
        assert resp.status_code == 202, resp.text
        wait_for(
            lambda: fed.call("GET", f"/v1/vnfs/{vnf_id}").status_code == 404,
            timeout=120,
            what=f"{vnf_id} deleted",
            every=1.0,
        )

        def no_servers() -> bool:  # Nova finishes a delete it accepted a moment later
            return not list(admin.compute.servers(all_projects=True, project_id=tenant))

        wait_for(no_servers, timeout=60, what="the VNF's servers gone from Nova", every=1.0)
    finally:
        # what a failed run leaves outside the test's project (flavors are global, the
        # VNF's image belongs to the agent's project); the project's own go with it
        prefix = cloud_name(OS_SITE, vnf_id)
        for server in admin.compute.servers(all_projects=True, project_id=tenant):
            admin.compute.delete_server(server, ignore_missing=True)
        for flavor in admin.compute.flavors(is_public=None):
            if flavor.name.startswith(prefix):
                admin.compute.delete_flavor(flavor, ignore_missing=True)
        for image in admin.image.images():
            if image.name and image.name.startswith(prefix):
                admin.image.delete_image(image, ignore_missing=True)
        admin.close()


@pytest.fixture
def tenant_at_both(minicloud: Minicloud) -> Iterator[str]:
    """One tenant at both sites: a Keystone project of the same name in each."""
    with fresh_project(CLOUD, prefix="mg") as one, fresh_project(CLOUD2, name=one.name):
        yield one.name


@pytest.fixture
async def image_at_both(minicloud: Minicloud, tmp_path: Path) -> Any:
    """The same 1 MiB held as a Meridian image at both sites; yields (size, sha256)."""
    data = os.urandom(1 << 20)
    digest = hashlib.sha256(data).hexdigest()
    source = tmp_path / "geo.img"
    source.write_bytes(data)
    seeders = [OpenStackDriver(f"seed{digest[:8]}", c, timeout=60.0) for c in (CLOUD, CLOUD2)]
    spec = {"disk_format": "raw", "size": len(data), "sha256": digest, "source": str(source)}
    try:
        for seeder in seeders:
            status = await seeder.apply(models.DesiredObject("image", "gw", 1, spec))
            assert status.state is not models.ObjectState.FAILED, status
        yield len(data), digest
    finally:
        for seeder in seeders:
            await seeder.delete("image", "gw")
            await seeder.close()


def test_active_standby_pair_lands_one_member_in_each_minicloud_sites_nova(
    fed: OpenStackFederation, tenant_at_both: str, image_at_both: tuple[int, str]
) -> None:
    tenant = tenant_at_both
    limits = {"instances": 20, "cores": 40, "ram_mb": 65536, "ports": 50}
    resp = fed.call("PUT", f"/v1/quotas/{tenant}", json={"limits": limits})
    assert resp.status_code == 200, resp.text
    geo = descriptor(tenant, *image_at_both)
    geo["name"], geo["vdus"], geo["selectors"] = "vgeo", geo["vdus"][:1], {"cloud": "openstack"}
    resp = fed.call("POST", "/v1/vnfs", json=geo)
    assert resp.status_code == 202, resp.text
    vnf_id = resp.json()["id"]
    admins = {OS_SITE: connect(cloud=CLOUD), OS_SITE2: connect(cloud=CLOUD2)}
    try:

        def settled() -> dict[str, Any] | None:
            vnf: dict[str, Any] = fed.api_get(f"/v1/vnfs/{vnf_id}")
            return vnf if vnf["state"] in ("ACTIVE", "FAILED") else None

        vnf = wait_for(settled, timeout=300, what=f"{vnf_id} ACTIVE", every=1.0)
        assert vnf["state"] == "ACTIVE", (vnf["reason"], vnf["members"])
        assert sorted(m["site"] for m in vnf["members"]) == sorted([OS_SITE, OS_SITE2])

        members = {m["site"]: m for m in vnf["members"]}
        assert {m["role"] for m in members.values()} == {"active", "standby"}
        for site, admin in admins.items():  # each member in its own site's Nova and group
            project = admin.identity.find_project(tenant, domain_id="default")
            servers = list(admin.compute.servers(all_projects=True, project_id=project.id))
            assert len(servers) == 1, f"{site}: {[s.name for s in servers]}"
            server = admin.compute.get_server(servers[0].id)
            assert server.status == "ACTIVE", (site, server.status)
            assert server.name == cloud_name(site, f"{vnf_id}-{members[site]['name']}")
            assert server.compute_host == members[site]["observed_host"]
            group = next(
                g
                for g in admin.compute.server_groups(all_projects=True)
                if g.name == cloud_name(site, f"{vnf_id}-ctl")
            )
            policy = group.policy if group.policy else (group.policies or [""])[0]
            assert policy == "soft-anti-affinity", policy  # members kept apart by site
            assert group.member_ids == [server.id] and group.project_id == project.id

        resp = fed.call("DELETE", f"/v1/vnfs/{vnf_id}")
        assert resp.status_code == 202, resp.text
        wait_for(
            lambda: fed.call("GET", f"/v1/vnfs/{vnf_id}").status_code == 404,
            timeout=120,
            what=f"{vnf_id} deleted",
            every=1.0,
        )
    finally:  # what a failed run leaves outside the projects (flavors, the VNF's images)
        for site, admin in admins.items():
            prefix = cloud_name(site, vnf_id)
            for flavor in admin.compute.flavors(is_public=None):
                if flavor.name.startswith(prefix):
                    admin.compute.delete_flavor(flavor, ignore_missing=True)
            for image in admin.image.images():
                if image.name and image.name.startswith(prefix):
                    admin.image.delete_image(image, ignore_missing=True)
            admin.close()
