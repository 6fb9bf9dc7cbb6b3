"""Neutron objects of the openstack driver: security groups, networks, subnets, ports.

``NeutronObjects`` is a part of ``openstack.OpenStackDriver`` (a mixin): the driver finds
an object by its cloud name and marker and calls ``_apply_<kind>`` with it. Each object
Meridian makes here carries its marker as a tag and in its description, and re-applying
the same generation changes nothing (invariant 4); what cannot change in place (a network's
provider segment, a subnet's cidr, a bound port's network) is refused with a permanent
error instead of being replaced under a running server. Security group rules Meridian adds
are described ``meridian``; only those are ever removed.
"""

from __future__ import annotations

from typing import Any

from siteagent import errors, models
from siteagent.drivers import specs
from siteagent.drivers.openstack_support import PREFIX as PREFIX_KEY
from siteagent.drivers.openstack_support import Marker, cloud_name


class NeutronObjects:
    """The Neutron kinds of ``OpenStackDriver``; the driver supplies the stubs below."""

    site: str

    def _admin(self) -> Any:
        raise NotImplementedError

    def _find(self, kind: str, name: str) -> tuple[Any, Marker | None]:
        raise NotImplementedError

    def _project_id(self, project: str) -> str:
        raise NotImplementedError

    def _apply_security_group(
        self, obj: models.DesiredObject, spec: specs.SecurityGroupSpec, marker: Marker, old: Any
    ) -> Any:
        conn = self._admin()
        if old is None:
            group = conn.network.create_security_group(
                name=cloud_name(self.site, obj.name),
                description=str(marker),
                project_id=self._project_id(spec.project),
            )
        else:
            group = conn.network.update_security_group(old, description=str(marker))
        conn.network.set_tags(group, [str(marker)])
        wanted = {
            _rule_key(r.direction, r.protocol, r.port_min, r.port_max, r.remote_ip_prefix)
            for r in spec.rules
        }
        have: dict[tuple[Any, ...], Any] = {}
        for rule in conn.network.security_group_rules(security_group_id=group.id):
            key = _rule_key(
                rule.direction,
                rule.protocol or "any",
                rule.port_range_min,
                rule.port_range_max,
                rule.remote_ip_prefix,
            )
            if rule.ether_type == "IPv4" and key in wanted and key not in have:
                have[key] = rule
            elif rule.description == PREFIX_KEY:  # ours, no longer wanted
                conn.network.delete_security_group_rule(rule, ignore_missing=True)
        for r in spec.rules:
            key = _rule_key(r.direction, r.protocol, r.port_min, r.port_max, r.remote_ip_prefix)
            if key in have:
                continue
            conn.network.create_security_group_rule(
                security_group_id=group.id,
                direction=r.direction,
                ether_type="IPv4",
                protocol=None if r.protocol == "any" else r.protocol,
                port_range_min=r.port_min,
                port_range_max=r.port_max,
                remote_ip_prefix=r.remote_ip_prefix,
                description=PREFIX_KEY,
            )
            have[key] = True
        return conn.network.get_security_group(group.id)

    def _apply_network(
        self, obj: models.DesiredObject, spec: specs.NetworkSpec, marker: Marker, old: Any
    ) -> Any:
        conn = self._admin()
        if old is not None:
            provider = (old.provider_network_type, old.provider_physical_network)
            if provider != (spec.network_type, spec.physnet) or (
                spec.segmentation_id is not None
                and old.provider_segmentation_id != spec.segmentation_id
            ):
                raise errors.DriverError(
                    obj.kind,
                    obj.name,
                    "provider attributes of an existing network cannot change",
                    temporary=False,
                )
            network = conn.network.update_network(
                old, description=str(marker), is_shared=spec.shared
            )
        else:
            attrs: dict[str, Any] = {
                "name": cloud_name(self.site, obj.name),
                "description": str(marker),
                "project_id": self._project_id(spec.project),
                "is_shared": spec.shared,
                "provider_network_type": spec.network_type,
            }
            if spec.physnet is not None:
                attrs["provider_physical_network"] = spec.physnet
            if spec.segmentation_id is not None:
                attrs["provider_segmentation_id"] = spec.segmentation_id
            network = conn.network.create_network(**attrs)
        conn.network.set_tags(network, [str(marker)])
        return conn.network.get_network(network.id)

    def _network_id(self, who: tuple[str, str], ref: str) -> str:
        net, _ = self._find("network", ref)
        if net is None:
            found = self._admin().network.find_network(ref, ignore_missing=True)
            if found is None:
                raise errors.DriverError(
                    *who, f"network {ref!r} not found", temporary=True, retry_after=1.0
                )
            return str(found.id)
        return str(net.id)

    def _apply_subnet(
        self, obj: models.DesiredObject, spec: specs.SubnetSpec, marker: Marker, old: Any
    ) -> Any:
        conn = self._admin()
        network_id = self._network_id((obj.kind, obj.name), spec.network)
        pools = obj.spec.get("allocation_pools")
        if old is not None:
            if (old.network_id, old.cidr) != (network_id, spec.cidr):
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
                "name": cloud_name(self.site, obj.name),
                "description": str(marker),
                "project_id": self._project_id(spec.project),
                "network_id": network_id,
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

    def _apply_port(
        self, obj: models.DesiredObject, spec: specs.PortSpec, marker: Marker, old: Any
    ) -> Any:
        conn = self._admin()
        who = (obj.kind, obj.name)
        groups = []
        for ref in spec.security_groups:
            group, _ = self._find("security_group", ref)
            if group is None:
                raise errors.DriverError(
                    *who, f"security_group {ref!r} not found", temporary=True, retry_after=1.0
                )
            groups.append(group.id)
        network_id = self._network_id(who, spec.network)
        if old is not None:
            if (old.network_id, old.binding_vnic_type) != (network_id, spec.vnic_type):
                if old.device_id:
                    raise errors.DriverError(
                        *who,
                        "network and vnic_type of a port bound to a server cannot change",
                        temporary=False,
                    )
                conn.network.delete_port(old, ignore_missing=True)
                old = None
        if old is None:
            port = conn.network.create_port(
                name=cloud_name(self.site, obj.name),
                description=str(marker),
                project_id=self._project_id(spec.project),
                network_id=network_id,
                binding_vnic_type=spec.vnic_type,
                security_group_ids=groups,
            )
        else:
            port = conn.network.update_port(old, description=str(marker), security_group_ids=groups)
        conn.network.set_tags(port, [str(marker)])
        return conn.network.get_port(port.id)


def _rule_key(
    direction: str, protocol: str, low: int | None, high: int | None, prefix: str | None
) -> tuple[Any, ...]:
    return (direction, protocol, low, high, prefix)
