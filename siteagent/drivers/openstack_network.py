"""Neutron objects of the openstack driver: security groups, networks, subnets, ports, trunks.

``NeutronObjects`` is a part of ``openstack.OpenStackDriver`` (a mixin): the driver finds
an object by its cloud name and marker and calls ``_apply_<kind>`` with it. Each object
Meridian makes here carries its marker as a tag and in its description, and re-applying
the same generation changes nothing (invariant 4); what cannot change in place (a network's
provider segment, a subnet's cidr, a bound port's network) is refused with a permanent
error instead of being replaced under a running server. Security group rules Meridian adds
are described ``meridian``; only those are ever removed.

A port whose spec has a ``trunk`` is the parent of a Neutron trunk marked
``<site>/trunk/<port>``: its subports are reconciled on each new generation, and the port
takes its generation's marker only once the trunk is in place. A trunk goes before its
parent port, and a subport leaves its trunk before it is deleted; a trunk Meridian did not
make is never touched.
"""

from __future__ import annotations

from typing import Any

from openstack import exceptions as os_exc

from siteagent import errors, models
from siteagent.drivers import specs
from siteagent.drivers.openstack_support import PREFIX as PREFIX_KEY
from siteagent.drivers.openstack_support import Marker, cloud_name, find_marker, not_found

TRUNK = "trunk"
"""The kind in a trunk's marker: the trunk of port ``x`` is marked ``<site>/trunk/x``."""


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
        subports = self._subports(who, spec.trunk)  # before any change: a missing one waits
        if old is not None:
            if (old.network_id, old.binding_vnic_type) != (network_id, spec.vnic_type):
                if old.device_id:
                    raise errors.DriverError(
                        *who,
                        "network and vnic_type of a port bound to a server cannot change",
                        temporary=False,
                    )
                self._drop_trunk(who, old)
                conn.network.delete_port(old, ignore_missing=True)
                old = None
        if old is None:
            # marked generation 0 until its trunk is in place: a failure in between is
            # retried by the next apply of the same generation instead of taken as done
            port = conn.network.create_port(
                name=cloud_name(self.site, obj.name),
                description=str(Marker(marker.site, marker.kind, marker.name, 0)),
                project_id=self._project_id(spec.project),
                network_id=network_id,
                binding_vnic_type=spec.vnic_type,
                security_group_ids=groups,
            )
        else:
            port = conn.network.update_port(old, security_group_ids=groups)
        if subports is not None:
            self._reconcile_trunk(who, spec, marker, port, subports)
        elif old is not None:
            self._drop_trunk(who, port)
        port = conn.network.update_port(port, description=str(marker))
        conn.network.set_tags(port, [str(marker)])
        return conn.network.get_port(port.id)

    # -- trunks ----------------------------------------------------------------------------

    def _subports(
        self, who: tuple[str, str], trunk: specs.TrunkSpec | None
    ) -> dict[str, tuple[str, int]] | None:
        """The wanted subports by Neutron port id: ``{id: (segmentation type, id)}``."""
        if trunk is None:
            return None
        wanted: dict[str, tuple[str, int]] = {}
        for sub in trunk.subports:
            port, _ = self._find("port", sub.port)
            if port is None:
                raise errors.DriverError(
                    *who, f"subport {sub.port!r} not found", temporary=True, retry_after=1.0
                )
            wanted[str(port.id)] = (sub.segmentation_type, sub.segmentation_id)
        return wanted

    def _trunks(self, **query: Any) -> list[Any] | None:
        """Trunks matching ``query``; None when this Neutron has no trunk extension."""
        try:
            return list(self._admin().network.trunks(**query))
        except os_exc.HttpException as exc:
            if not_found(exc):  # GET /v2.0/trunks is 404 without the service plugin
                return None
            raise

    def _trunk_of(self, who: tuple[str, str], port: Any, *, needed: bool = False) -> Any:
        """The trunk whose parent is ``port``, if any; refused when it is not Meridian's.

        ``needed``: the spec asks for a trunk, so a cloud without trunks is a permanent error.
        """
        want = Marker(self.site, TRUNK, who[1], 0)
        trunks = self._trunks(port_id=port.id)
        if trunks is None and needed:
            raise errors.DriverError(
                *who,
                "this cloud's Neutron has no trunk extension (service plugin 'trunk')",
                temporary=False,
            )
        for trunk in trunks or []:
            if not want.same_object(find_marker(trunk.tags, trunk.description)):
                raise errors.DriverError(
                    *who,
                    f"port is the parent of trunk {trunk.id}, which is not Meridian's; "
                    "it is left alone",
                    temporary=False,
                )
            return trunk
        return None

    def _reconcile_trunk(
        self,
        who: tuple[str, str],
        spec: specs.PortSpec,
        marker: Marker,
        port: Any,
        wanted: dict[str, tuple[str, int]],
    ) -> None:
        """Creates the trunk on ``port``, or brings its subports to ``wanted``."""
        conn = self._admin()
        tmarker = str(Marker(self.site, TRUNK, who[1], marker.generation))
        trunk = self._trunk_of(who, port, needed=True)
        if trunk is None:
            trunk = conn.network.create_trunk(
                name=cloud_name(self.site, who[1]),
                description=tmarker,
                project_id=self._project_id(spec.project),
                port_id=port.id,
                sub_ports=_subport_bodies(wanted),
            )
        else:
            have = {
                str(s["port_id"]): (str(s["segmentation_type"]), int(s["segmentation_id"]))
                for s in trunk.sub_ports or []
            }
            # removed first: a VLAN id may move from one subport to another
            stale = [{"port_id": pid} for pid, seg in have.items() if wanted.get(pid) != seg]
            if stale:
                conn.network.delete_trunk_subports(trunk, stale)
            fresh = {pid: seg for pid, seg in wanted.items() if have.get(pid) != seg}
            if fresh:
                conn.network.add_trunk_subports(trunk, _subport_bodies(fresh))
            trunk = conn.network.update_trunk(trunk, description=tmarker)
        conn.network.set_tags(trunk, [tmarker])

    def _drop_trunk(self, who: tuple[str, str], port: Any) -> None:
        """Deletes the Meridian trunk whose parent is ``port`` (with its subports)."""
        trunk = self._trunk_of(who, port)
        if trunk is not None:
            self._admin().network.delete_trunk(trunk, ignore_missing=True)

    def _delete_port(self, name: str, port: Any) -> None:
        """Deletes a port after what holds it: its own trunk, or its place on one."""
        conn = self._admin()
        who = ("port", name)
        self._drop_trunk(who, port)
        # an unbound subport's device_owner stays empty (only binding sets trunk:subport),
        # and Neutron filters trunks by parent only: look at every trunk's subports
        for trunk in self._trunks() or []:
            if not any(s.get("port_id") == port.id for s in trunk.sub_ports or []):
                continue
            if find_marker(trunk.tags, trunk.description) is None:
                raise errors.DriverError(
                    *who,
                    f"port is a subport of trunk {trunk.id}, which is not Meridian's",
                    temporary=False,
                )
            conn.network.delete_trunk_subports(trunk, [{"port_id": port.id}])
        conn.network.delete_port(port, ignore_missing=True)


def port_outputs(port: Any) -> dict[str, str]:
    """What a port's status reports: its MAC, vnic type and trunk with subports, if any."""
    outputs = {
        "mac_address": str(port.mac_address),
        "vnic_type": str(port.binding_vnic_type),
    }
    details = port.trunk_details or {}
    if details.get("trunk_id"):
        outputs["trunk_id"] = str(details["trunk_id"])
        subs = sorted(details.get("sub_ports") or [], key=lambda s: int(s["segmentation_id"]))
        outputs["trunk_subports"] = ",".join(
            f"{s['segmentation_type']}/{s['segmentation_id']}={s['port_id']}" for s in subs
        )
    return outputs


def _subport_bodies(subports: dict[str, tuple[str, int]]) -> list[dict[str, Any]]:
    return [
        {"port_id": pid, "segmentation_type": kind, "segmentation_id": seg}
        for pid, (kind, seg) in sorted(subports.items(), key=lambda item: item[1][1])
    ]


def _rule_key(
    direction: str, protocol: str, low: int | None, high: int | None, prefix: str | None
) -> tuple[Any, ...]:
    return (direction, protocol, low, high, prefix)
