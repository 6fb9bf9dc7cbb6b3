"""Trunk ports on a real Neutron (minicloud loads the ``trunk`` service plugin).

A port whose spec has ``trunk.subports`` becomes the parent of a Meridian-marked trunk;
everything is read back from Neutron itself. No server is booted: the trunk API does not
need one, and minicloud has no data plane for the VLANs (the trunk stays DOWN). Without
a binding, Neutron leaves the subports' ``device_owner`` empty (an agent sets
``trunk:subport`` when the parent binds), so the trunk's own ``sub_ports`` is the record.
"""

from __future__ import annotations

from typing import Any

import pytest

from siteagent import errors, models
from siteagent.drivers.openstack import OpenStackDriver
from siteagent.drivers.openstack_support import cloud_name
from tests.support.minicloud import PROJECT

pytestmark = [pytest.mark.openstack, pytest.mark.slow]


def D(kind: str, name: str, spec: dict[str, Any], generation: int = 1) -> models.DesiredObject:
    return models.DesiredObject(kind, name, generation, spec)


def parent(subports: dict[str, int] | None, generation: int) -> models.DesiredObject:
    spec: dict[str, Any] = {"project": PROJECT, "network": "net"}
    if subports is not None:
        spec["trunk"] = {
            "subports": [
                {"port": port, "segmentation_type": "vlan", "segmentation_id": vlan}
                for port, vlan in subports.items()
            ]
        }
    return D("port", "parent", spec, generation)


async def apply_all(drv: OpenStackDriver, *objs: models.DesiredObject) -> list[models.ObjectStatus]:
    out = []
    for obj in objs:
        status = await drv.apply(obj)
        assert status.state is models.ObjectState.READY, status
        out.append(status)
    return out


def base_objects() -> list[models.DesiredObject]:
    return [
        D("network", "net", {"project": PROJECT, "network_type": "vxlan"}),
        D("subnet", "subnet", {"project": PROJECT, "network": "net", "cidr": "10.78.0.0/24"}),
        *(D("port", s, {"project": PROJECT, "network": "net"}) for s in ("s1", "s2", "s3")),
    ]


class Neutron:
    """What Neutron itself holds for one test's site."""

    def __init__(self, conn: Any, site: str) -> None:
        self.conn, self.site = conn, site

    def port(self, name: str) -> Any:
        ports = list(self.conn.network.ports(name=cloud_name(self.site, name)))
        assert len(ports) == 1, ports
        return ports[0]

    def trunks(self) -> list[Any]:
        return list(self.conn.network.trunks(name=cloud_name(self.site, "parent")))

    def vlans(self) -> dict[str, int]:
        """The one trunk's subports as {Meridian port name: VLAN id}."""
        (trunk,) = self.trunks()
        assert trunk.port_id == self.port("parent").id
        names = {
            p.id: n
            for n in ("s1", "s2", "s3")
            for p in self.conn.network.ports(name=cloud_name(self.site, n))
        }
        assert {s["segmentation_type"] for s in trunk.sub_ports} <= {"vlan"}
        return {names[s["port_id"]]: s["segmentation_id"] for s in trunk.sub_ports}

    def leftovers(self) -> dict[str, int]:
        ports = [
            p
            for n in ("parent", "s1", "s2", "s3")
            for p in self.conn.network.ports(name=cloud_name(self.site, n))
        ]
        return {"trunks": len(self.trunks()), "ports": len(ports)}


async def test_trunk_port_with_two_vlan_subports_is_created_reconciled_and_deleted(
    driver: OpenStackDriver, conn: Any, site: str
) -> None:
    neutron = Neutron(conn, site)
    await apply_all(driver, *base_objects())
    (status,) = await apply_all(driver, parent({"s1": 101, "s2": 102}, 1))

    assert neutron.vlans() == {"s1": 101, "s2": 102}
    (trunk,) = neutron.trunks()
    marker = f"meridian:{site}/trunk/parent:gen=1"
    assert trunk.description == marker and marker in trunk.tags
    assert trunk.project_id == neutron.port("parent").project_id
    assert status.outputs["trunk_id"] == trunk.id
    s1, s2 = neutron.port("s1").id, neutron.port("s2").id
    assert status.outputs["trunk_subports"] == f"vlan/101={s1},vlan/102={s2}"

    # the same generation again: nothing is written, not even the trunk's description
    (again,) = await apply_all(driver, parent({"s1": 101, "s2": 102}, 1))
    assert again == status
    (same,) = neutron.trunks()
    assert (same.id, same.revision_number) == (trunk.id, trunk.revision_number)

    # a new generation: s1 leaves, s3 takes its VLAN, s2 moves to VLAN 202
    (changed,) = await apply_all(driver, parent({"s3": 101, "s2": 202}, 2))
    assert neutron.vlans() == {"s3": 101, "s2": 202}
    (after,) = neutron.trunks()
    assert after.id == trunk.id
    assert f"meridian:{site}/trunk/parent:gen=2" in after.tags
    observed = await driver.observe("port", "parent")
    assert observed is not None and observed.observed_generation == 2
    assert observed.outputs == changed.outputs
    s3 = neutron.port("s3").id
    assert observed.outputs["trunk_subports"] == f"vlan/101={s3},vlan/202={s2}"

    # delete in dependency order: the trunk goes before its parent port
    deleted = await driver.delete("port", "parent")
    assert deleted.state is models.ObjectState.DELETED
    assert neutron.trunks() == []
    assert await driver.observe("port", "parent") is None
    for obj in reversed(base_objects()):
        assert (await driver.delete(obj.kind, obj.name)).state is models.ObjectState.DELETED
    assert neutron.leftovers() == {"trunks": 0, "ports": 0}


async def test_a_subport_deleted_first_leaves_its_trunk_and_a_dropped_trunk_keeps_the_port(
    driver: OpenStackDriver, conn: Any, site: str
) -> None:
    neutron = Neutron(conn, site)
    await apply_all(driver, *base_objects())
    await apply_all(driver, parent({"s1": 301, "s2": 302}, 1))
    port_id = neutron.port("parent").id

    # a subport's own delete takes it off the Meridian trunk first (Neutron refuses to
    # delete a port that is a subport)
    assert (await driver.delete("port", "s1")).state is models.ObjectState.DELETED
    assert neutron.vlans() == {"s2": 302}
    assert list(conn.network.ports(name=cloud_name(site, "s1"))) == []

    # a spec without ``trunk`` deletes the trunk; the port itself stays
    (status,) = await apply_all(driver, parent(None, 2))
    assert neutron.trunks() == []
    assert neutron.port("parent").id == port_id == status.outputs["id"]
    assert "trunk_id" not in status.outputs

    for obj in [parent(None, 2), *reversed(base_objects())]:
        await driver.delete(obj.kind, obj.name)
    assert neutron.leftovers() == {"trunks": 0, "ports": 0}


async def test_a_missing_subport_is_a_temporary_error_and_nothing_is_created(
    driver: OpenStackDriver, conn: Any, site: str
) -> None:
    neutron = Neutron(conn, site)
    await apply_all(driver, base_objects()[0])
    with pytest.raises(errors.DriverError) as waiting:
        await driver.apply(parent({"nope": 400}, 1))
    assert waiting.value.temporary
    assert "subport 'nope' not found" in waiting.value.cloud_message
    assert list(conn.network.ports(name=cloud_name(site, "parent"))) == []
    assert neutron.trunks() == []
    await driver.delete("network", "net")


async def test_a_trunk_that_is_not_meridians_is_never_touched(
    driver: OpenStackDriver, conn: Any, site: str
) -> None:
    neutron = Neutron(conn, site)
    await apply_all(driver, *base_objects()[:3], parent(None, 1))
    foreign = conn.network.create_trunk(
        name="someone-elses", description="not ours", port_id=neutron.port("parent").id
    )
    try:
        for attempt in (
            driver.apply(parent({"s1": 501}, 2)),
            driver.delete("port", "parent"),
        ):
            with pytest.raises(errors.DriverError) as refused:
                await attempt
            assert not refused.value.temporary
            assert "not Meridian's" in refused.value.cloud_message
        after = conn.network.get_trunk(foreign.id)
        assert (after.description, after.sub_ports, after.revision_number) == (
            "not ours",
            [],
            foreign.revision_number,
        )
    finally:
        conn.network.delete_trunk(foreign, ignore_missing=True)
    await driver.delete("port", "parent")
    for obj in reversed(base_objects()[:3]):
        await driver.delete(obj.kind, obj.name)
    assert neutron.leftovers() == {"trunks": 0, "ports": 0}
