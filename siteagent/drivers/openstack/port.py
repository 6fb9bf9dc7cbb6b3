"""Ports, in the spec's project, on a network (Meridian's or the cloud's own), with their
security groups and, when the spec has one, the trunk they are the parent of (``trunk``).

A port bound to a server cannot move to another network or vnic type (refused for good);
an unbound one is replaced. A new port is marked generation 0 until its trunk is in place,
so a failure in between is retried by the next apply of the same generation instead of
taken as done. A port leaves its trunks, and its own trunk goes, before it is deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from siteagent import errors, models
from siteagent.drivers import specs
from siteagent.drivers.openstack import trunk
from siteagent.drivers.openstack.cloud import Cloud, Found, tagged
from siteagent.drivers.openstack.kind import Owned
from siteagent.drivers.openstack.network import network_id
from siteagent.drivers.openstack_support import Marker


class Ports(Owned[specs.PortSpec]):
    kind = "port"
    spec_type = specs.PortSpec

    def candidates(self, cloud: Cloud, name: str) -> Iterable[Found]:
        return tagged(cloud.admin().network.ports(name=cloud.name_of(name)))

    def converge(
        self,
        cloud: Cloud,
        obj: models.DesiredObject,
        spec: specs.PortSpec,
        marker: Marker,
        old: Any,
    ) -> Any:
        conn = cloud.admin()
        who = (obj.kind, obj.name)
        groups = [cloud.require(who, "security_group", ref).id for ref in spec.security_groups]
        net = network_id(cloud, who, spec.network)
        subports = trunk.subports(cloud, who, spec.trunk)  # before any change: a missing one waits
        if old is not None and (old.network_id, old.binding_vnic_type) != (net, spec.vnic_type):
            if old.device_id:
                raise errors.DriverError(
                    *who,
                    "network and vnic_type of a port bound to a server cannot change",
                    temporary=False,
                )
            trunk.drop(cloud, who, old)
            conn.network.delete_port(old, ignore_missing=True)
            old = None
        if old is None:
            port = conn.network.create_port(
                name=cloud.name_of(obj.name),
                description=str(Marker(marker.site, marker.kind, marker.name, 0)),
                project_id=cloud.project_id(spec.project),
                network_id=net,
                binding_vnic_type=spec.vnic_type,
                security_group_ids=groups,
            )
        else:
            port = conn.network.update_port(old, security_group_ids=groups)
        if subports is not None:
            trunk.reconcile(cloud, who, spec, marker, port, subports)
        elif old is not None:
            trunk.drop(cloud, who, port)
        port = conn.network.update_port(port, description=str(marker))
        conn.network.set_tags(port, [str(marker)])
        return conn.network.get_port(port.id)

    def remove(self, cloud: Cloud, name: str, found: Any) -> None:
        who = (self.kind, name)
        trunk.drop(cloud, who, found)
        trunk.leave_all(cloud, who, found)
        cloud.admin().network.delete_port(found, ignore_missing=True)

    def outputs(self, found: Any) -> dict[str, str]:
        """Its id, MAC, vnic type and trunk with subports, if any."""
        outputs = {
            "id": str(found.id),
            "mac_address": str(found.mac_address),
            "vnic_type": str(found.binding_vnic_type),
        }
        details = found.trunk_details or {}
        if details.get("trunk_id"):
            outputs["trunk_id"] = str(details["trunk_id"])
            subs = sorted(details.get("sub_ports") or [], key=lambda s: int(s["segmentation_id"]))
            outputs["trunk_subports"] = ",".join(
                f"{s['segmentation_type']}/{s['segmentation_id']}={s['port_id']}" for s in subs
            )
        return outputs


HANDLER = Ports()
