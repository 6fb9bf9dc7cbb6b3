"""Geo-redundancy on real OpenStack (issue 10): an active-standby pair over both minicloud
sites follows what Nova says.

A federation of etcd, one broker and two agents driving minicloud site 1 and site 2 with
the openstack driver. Checked from outside Meridian with openstacksdk:

- a member's server deleted out of band in Nova is healed: the agent re-observes it and
  reports it gone, the VNF records ``vnf.member_lost``, a replacement standby is built (a
  new Nova server, ACTIVE, ``meridian:role`` ``standby``) while the active serves on, and
  the VNF records ``vnf.healed`` and is ACTIVE again;
- the agent of the site holding the active member is killed (``kill -9``): the site goes
  DOWN and the standby's server at the other site is promoted — ``meridian:role`` is
  ``active`` in its Nova metadata, applied by its own agent.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siteagent.drivers.openstack_support import connect
from tests.integration.openstack import test_vnf_openstack as vnf_os
from tests.support import osfed
from tests.support.minicloud import Minicloud
from tests.support.osfed import OpenStackFederation
from tests.support.polling import wait_for

pytestmark = [pytest.mark.openstack, pytest.mark.etcd, pytest.mark.slow]

SITE1, SITE2 = "os-fo-1", "os-fo-2"
# one tenant (a Keystone project of one name) and one image held at both sites
tenant_at_both = vnf_os.tenant_at_both
image_at_both = vnf_os.image_at_both


@pytest.fixture(scope="module")
def fed(minicloud: Minicloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with osfed.geo(Path(tmp_path_factory.mktemp("os-fo")), SITE1, SITE2) as fed:
        yield fed


def create_pair(fed: OpenStackFederation, tenant: str, image: tuple[int, str], name: str) -> str:
    """An ACTIVE active-standby pair (the ``ctl`` VDU), one member at each site."""
    pair = vnf_os.descriptor(tenant, *image)
    pair["name"], pair["vdus"] = name, pair["vdus"][:1]
    vnf = osfed.create_active(fed, pair)
    assert sorted(m["site"] for m in vnf["members"]) == [SITE1, SITE2], vnf["members"]
    return str(vnf["id"])


def test_a_server_deleted_out_of_band_in_nova_is_healed(
    fed: OpenStackFederation, tenant_at_both: str, image_at_both: tuple[int, str]
) -> None:
    vnf_id = create_pair(fed, tenant_at_both, image_at_both, "vlost")
    vnf = fed.api_get(f"/v1/vnfs/{vnf_id}")
    active = next(m for m in vnf["members"] if m["role"] == "active")
    standby = next(m for m in vnf["members"] if m["role"] == "standby")
    server = osfed.nova_server(fed, standby["site"], vnf_id, standby["name"])
    assert server is not None and server.metadata.get("meridian:role") == "standby"
    admin = connect(cloud=fed.clouds[standby["site"]])
    try:
        admin.compute.delete_server(server.id)
    finally:
        admin.close()
    lost = wait_for(
        lambda: osfed.events(fed, vnf_id, "vnf.member_lost") or None,
        timeout=120,
        what=f"{standby['name']} noticed lost",
    )
    assert standby["name"] in lost[0]["message"], lost

    healed = wait_for(
        lambda: osfed.events(fed, vnf_id, "vnf.healed") or None,
        timeout=300,
        what=f"{vnf_id} healed: {fed.api_get(f'/v1/vnfs/{vnf_id}')}",
    )
    assert healed[0]["at_ms"] >= lost[0]["at_ms"], (lost, healed)
    after = wait_for(lambda: osfed.vnf_in(fed, vnf_id, ("ACTIVE",)), timeout=60, what="ACTIVE")
    members = {m["role"]: m for m in after["members"]}
    assert len(after["members"]) == 2 and set(members) == {"active", "standby"}, after
    assert {m["state"] for m in after["members"]} == {"READY"}, after["members"]
    assert members["active"]["site"] == active["site"]  # the active served throughout
    again = members["standby"]  # rebuilt at its own site (the other holds the active)
    assert again["site"] == standby["site"], after["members"]
    new = osfed.nova_server(fed, again["site"], vnf_id, again["name"])
    assert new is not None and new.id != server.id, "a new server replaces the deleted one"
    assert new.status == "ACTIVE", new.status
    assert new.metadata.get("meridian:role") == "standby", new.metadata
    still = osfed.nova_server(fed, active["site"], vnf_id, active["name"])
    assert still is not None and still.metadata.get("meridian:role") == "active"
    assert fed.call("DELETE", f"/v1/vnfs/{vnf_id}").status_code == 202


def test_killing_the_active_sites_agent_promotes_the_standby_in_nova(
    fed: OpenStackFederation, tenant_at_both: str, image_at_both: tuple[int, str]
) -> None:
    vnf_id = create_pair(fed, tenant_at_both, image_at_both, "vpair")
    osfed.active_at(fed, vnf_id, SITE1)  # site 1 holds the active
    standby = {m["site"]: m for m in fed.api_get(f"/v1/vnfs/{vnf_id}")["members"]}[SITE2]
    fed.kill(f"agent-{SITE1}", signal.SIGKILL)

    def promoted() -> Any:
        vnf = osfed.vnf_in(fed, vnf_id, ("DEGRADED", "ACTIVE", "HEALING"))
        if vnf is None:
            return None
        at = {m["site"]: m["role"] for m in vnf["members"]}
        return vnf if at[SITE2] == "active" else None

    wait_for(promoted, timeout=120, what=f"{vnf_id} promoted at {SITE2}")
    server = osfed.nova_server(fed, SITE2, vnf_id, standby["name"])
    assert server is not None and server.status == "ACTIVE"
    assert server.metadata.get("meridian:role") == "active", server.metadata
    assert osfed.events(fed, vnf_id, "vnf.failover_completed"), "promotion reported applied"
