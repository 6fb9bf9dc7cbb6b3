"""A local federation whose agents drive real minicloud sites, and Keystone projects per test.

``OpenStackFederation`` is the dev federation (etcd, broker processes, agent processes)
where the sites named in ``clouds`` run the ``openstack`` driver against that cloud of the
minicloud's ``clouds.yaml`` (the agent inherits ``OS_CLIENT_CONFIG_FILE``; credentials stay
in the agent's environment, invariant 6) and every other site runs the ``sim`` driver.
Sites are registered with the labels given in ``labels`` (a ``cost`` label steers the
placement's cost scorer). ``running`` brings one up for a test module — one broker, every
site UP or the test fails with the sites' states — and down afterwards. ``create_active``,
``active_at``, ``vnf_in``, ``events`` and ``nova_server`` are what the geo-redundancy tests
ask of it and of the sites' Novas (a member's server, as the site's admin sees it).

``fresh_project`` makes a Keystone project of its own for one test, with the minicloud's
``meridian-admin`` user given ``admin`` and ``member`` on it (the agent's driver acts in a
tenant's project through that role), and deletes its servers and the project afterwards:
usage reported for it is exactly what the test created, whatever else runs on the site.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from broker import errors
from broker.devfed.federation import Federation
from broker.devfed.minicloud import OpenStackSite
from siteagent.drivers.openstack_support import cloud_name, connect, connect_as_project
from tests.support.minicloud import CLOUD
from tests.support.polling import wait_for

CLOUD2 = "minicloud-site2"

ROOMY = {"instances": 20, "cores": 40, "ram_mb": 65536, "ports": 50}
"""A tenant's limits that never stand in a geo-redundancy test's way."""
CALM_DOWN_AFTER = 10.0
"""``down_after`` for the geo-redundancy tests: with two OpenStack sites on 2 loaded cores
a heartbeat is seen 3 s late now and then (sites flapped DOWN for 0.3 s several times a
minute at load 10), and a flap at the wrong moment fails over, refuses a replacement or
aborts a drill. Those tests lose sites by ``kill -9`` (a closed stream: DOWN at once)."""


@dataclass
class OpenStackFederation(Federation):
    clouds: dict[str, str] = field(default_factory=dict)
    """site id → cloud name in clouds.yaml, for the sites driven by the openstack driver."""
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    """site id → labels it is registered with (default ``tier=edge``)."""

    def __post_init__(self) -> None:
        # the federation writes these sites' agent settings (driver, cloud, image staging)
        self.openstack.update(
            {
                site: OpenStackSite(site_id=site, cloud=cloud, region="")
                for site, cloud in self.clouds.items()
            }
        )

    def register_sites(self, sites: list[str], regions: int = 3) -> None:
        with httpx.Client(base_url=self.api_url(), timeout=10.0, verify=self.api_verify) as client:
            for i, site in enumerate(sites):
                body = {
                    "id": site,
                    "region": f"region-{i % regions + 1}",
                    "zone": f"zone-{i % 2 + 1}",
                    "labels": self.labels.get(site, {"tier": "edge"}),
                }
                resp = client.post(
                    "/v1/sites", json=body, headers={"Authorization": f"Bearer {self.token}"}
                )
                if resp.status_code not in (201, 409):
                    raise errors.BrokerError(f"registering {site} failed: {resp.text}")

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.request(
            method, self.api_url() + path, headers=headers, timeout=10.0,
            verify=self.api_verify, **kw,
        )


@contextlib.contextmanager
def running(
    state: Path, sites: list[str], *, up_within: float = 180.0, **options: Any
) -> Iterator[OpenStackFederation]:
    """An ``OpenStackFederation`` of ``sites`` with one broker (``options``: its other
    fields), yielded once every site is UP, and brought down afterwards."""
    fed = OpenStackFederation(state=state, brokers=1, **options)
    try:
        fed.up(sites)
        states = fed.wait_all_up(sites, timeout=up_within)
        assert all(states.get(s) == "UP" for s in sites), states
        yield fed
    finally:
        fed.down()


def vnf_in(fed: OpenStackFederation, vnf_id: str, states: tuple[str, ...]) -> Any:
    """The VNF as the API shows it when it is in one of ``states``, else None."""
    vnf: dict[str, Any] = fed.api_get(f"/v1/vnfs/{vnf_id}")
    return vnf if vnf["state"] in states else None


def create_active(fed: OpenStackFederation, desc: dict[str, Any]) -> dict[str, Any]:
    """``desc`` created through the API (its tenant given ``ROOMY`` limits); the VNF once
    ACTIVE — the test fails with its members when it is not within 300 s."""
    resp = fed.call("PUT", f"/v1/quotas/{desc['tenant']}", json={"limits": ROOMY})
    assert resp.status_code == 200, resp.text
    resp = fed.call("POST", "/v1/vnfs", json=desc)
    assert resp.status_code == 202, resp.text
    vnf_id = str(resp.json()["id"])
    try:
        vnf = wait_for(
            lambda: vnf_in(fed, vnf_id, ("ACTIVE", "FAILED")), timeout=300, what=f"{vnf_id} ACTIVE"
        )
    except AssertionError as exc:
        members = fed.api_get(f"/v1/vnfs/{vnf_id}")["members"]
        raise AssertionError(f"{exc}; members: {members}") from None
    assert vnf["state"] == "ACTIVE", (vnf["reason"], vnf["members"])
    out: dict[str, Any] = vnf
    return out


def active_at(fed: OpenStackFederation, vnf_id: str, site: str) -> dict[str, Any]:
    """The VNF once ACTIVE with its active member at ``site``: switched over there first
    (``POST /v1/vnfs/{id}/failover``) when the active is elsewhere."""

    def there() -> Any:
        vnf = vnf_in(fed, vnf_id, ("ACTIVE",))
        at = {m["site"]: m["role"] for m in vnf["members"]} if vnf else {}
        return vnf if at.get(site) == "active" else None

    if there() is None:
        resp = fed.call("POST", f"/v1/vnfs/{vnf_id}/failover", json={"to_site": site})
        assert resp.status_code == 202, resp.text
    found: dict[str, Any] = wait_for(there, timeout=120, what=f"{vnf_id} active at {site}")
    return found


def events(fed: OpenStackFederation, subject: str, kind: str) -> list[dict[str, Any]]:
    """The events of ``kind`` about ``subject``, oldest first."""
    found = fed.api_get(f"/v1/events?subject={subject}&limit=200")["events"]
    return [e for e in found if e["kind"] == kind]


def nova_server(fed: OpenStackFederation, site: str, vnf_id: str, member: str) -> Any:
    """The Nova server of ``member`` at ``site`` as the site's admin sees it (None: none)."""
    admin = connect(cloud=fed.clouds[site])
    try:
        name = cloud_name(site, f"{vnf_id}-{member}")
        found = [s for s in admin.compute.servers(all_projects=True) if s.name == name]
        return admin.compute.get_server(found[0].id) if found else None
    finally:
        admin.close()


def geo(state: Path, one: str, two: str) -> contextlib.AbstractContextManager[Any]:
    """``running`` for the geo-redundancy tests: site ``one`` on minicloud site 1, ``two``
    on site 2, both labelled ``cloud=openstack``, silent sites DOWN after
    ``CALM_DOWN_AFTER``."""
    clouds = {one: CLOUD, two: CLOUD2}
    labels = {site: {"cloud": "openstack"} for site in clouds}
    return running(state, [one, two], clouds=clouds, labels=labels, down_after=CALM_DOWN_AFTER)


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    conn: Any
    """A connection scoped to the project (what an out-of-band user of the site does)."""


@contextlib.contextmanager
def fresh_project(cloud: str, prefix: str = "mt", name: str = "") -> Iterator[Project]:
    """``name`` (default: a fresh one) lets a test give two sites' Keystones one tenant."""
    admin = connect(cloud=cloud)
    name = name or f"{prefix}-{uuid.uuid4().hex[:8]}"
    project = admin.identity.create_project(name=name, domain_id="default")
    scoped: Any = None
    try:
        user = admin.identity.find_user("meridian-admin", domain_id="default")
        for role in ("admin", "member"):
            found = admin.identity.find_role(role)
            admin.identity.assign_project_role_to_user(project, user, found)
        scoped = connect_as_project(admin, {"id": project.id, "domain_id": "default"})
        yield Project(project.id, name, scoped)
    finally:
        servers = list(admin.compute.servers(all_projects=True, project_id=project.id))
        for server in servers:
            admin.compute.delete_server(server, ignore_missing=True)
        deadline = time.monotonic() + 60
        while servers and time.monotonic() < deadline:
            servers = list(admin.compute.servers(all_projects=True, project_id=project.id))
            time.sleep(0.5)
        for port in admin.network.ports(project_id=project.id):
            admin.network.delete_port(port, ignore_missing=True)
        for group in admin.compute.server_groups(all_projects=True):
            if group.project_id == project.id:
                admin.compute.delete_server_group(group, ignore_missing=True)
        for net in admin.network.networks(project_id=project.id):
            admin.network.delete_network(net, ignore_missing=True)
        admin.identity.delete_project(project, ignore_missing=True)
        if scoped is not None:
            scoped.close()
        admin.close()
