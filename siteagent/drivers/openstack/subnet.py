"""Subnets of a network (Meridian's or the cloud's own), in the spec's project.

A subnet's network and cidr cannot change in place (refused for good); DHCP and
allocation pools are updated.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from siteagent import errors, models
from siteagent.drivers import specs
from siteagent.drivers.openstack.cloud import Cloud, Found, tagged
from siteagent.drivers.openstack.kind import Owned
from siteagent.drivers.openstack.network import network_id
from siteagent.drivers.openstack_support import Marker


class Subnets(Owned[specs.SubnetSpec]):
    kind = "subnet"
    spec_type = specs.SubnetSpec

    def candidates(self, cloud: Cloud, name: str) -> Iterable[Found]:
        return tagged(cloud.admin().network.subnets(name=cloud.name_of(name)))

    def converge(
        self,
        cloud: Cloud,
        obj: models.DesiredObject,
        spec: specs.SubnetSpec,
        marker: Marker,
        old: Any,
    ) -> Any:
        conn = cloud.admin()
        net = network_id(cloud, (obj.kind, obj.name), spec.network)
        pools = obj.spec.get("allocation_pools")
        if old is not None:
            if (old.network_id, old.cidr) != (net, spec.cidr):
                raise errors.DriverError(
                    obj.kind, obj.name, "a subnet's network and cidr cannot change", temporary=False
                )
            attrs: dict[str, Any] = {
                "description": str(marker),
                "is_dhcp_enabled": spec.enable_dhcp,
            }
            if pools is not None:
                attrs["allocation_pools"] = pools
            subnet = conn.network.update_subnet(old, **attrs)
        else:
            attrs = {
                "name": cloud.name_of(obj.name),
                "description": str(marker),
                "project_id": cloud.project_id(spec.project),
                "network_id": net,
                "ip_version": 6 if ":" in spec.cidr else 4,
                "cidr": spec.cidr,
                "is_dhcp_enabled": spec.enable_dhcp,
            }
            if spec.gateway_ip is not None:
                attrs["gateway_ip"] = spec.gateway_ip
            if pools is not None:
                attrs["allocation_pools"] = pools
            subnet = conn.network.create_subnet(**attrs)
        conn.network.set_tags(subnet, [str(marker)])
        return conn.network.get_subnet(subnet.id)

    def remove(self, cloud: Cloud, name: str, found: Any) -> None:
        cloud.admin().network.delete_subnet(found, ignore_missing=True)


HANDLER = Subnets()
