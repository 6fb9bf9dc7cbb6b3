"""A geo-redundant VNF placed through the broker onto a real OpenStack site and a sim site.

A federation of etcd, one broker process and two agent processes: ``os-vnf`` drives
minicloud site 1 (two computes) with the openstack driver, ``sim-vnf`` is simulated and
registered as the dearer site (a ``cost`` label; the descriptor weighs cost only). The VNF:

- ``ctl``: an active-standby pair with site anti-affinity — one member per site (geo);
- ``fwd``: two members with host anti-affinity — both at the cheap real site, where Nova's
  own scheduler must keep them apart.

Checked from outside Meridian with openstacksdk: the ``fwd`` servers are ACTIVE members of
one Nova server group whose policy is anti-affinity, on the two different computes; the
flavor carries the VDU's extra specs. Deleting the VNF through the API leaves no server.

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


@pytest.fixture(scope="module")
def fed(minicloud: Minicloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    fed = OpenStackFederation(
        state=Path(tmp_path_factory.mktemp("os-vnf")),
        brokers=1,
        clouds={OS_SITE: CLOUD},
        labels={OS_SITE: {"tier": "core", "cost": "1"}, SIM_SITE: {"tier": "core", "cost": "10"}},
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
