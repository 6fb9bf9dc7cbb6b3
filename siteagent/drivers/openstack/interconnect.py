"""A stitched network's interconnect on an OpenStack site: Neutron BGPVPN objects.

The site's network and subnet (``network``/``subnet`` kinds, named after the stitched
network) are made first by the stitching driver; this module adds what joins them to the
other member sites: a ``bgpvpn`` (networking-bgpvpn) of type l2 (``l2-stretched``) or l3
(``l3-routed``) carrying the network's allocated route target and route distinguisher,
associated with the site's network, and, for ``l3-routed``, a router with an interface on
the site's subnet (its gateway address).

Invariant 4: found again by their Meridian cloud name (BGPVPNs carry no description or
tags to hold a marker), each object is made only when missing and brought to the spec
when it differs, so applying twice changes nothing; ``remove`` deletes the association,
the BGPVPN, the router's interface and the router, and succeeds when they are gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from siteagent import errors
from siteagent.drivers.openstack.cloud import Cloud
from siteagent.drivers.openstack.network import network_id

L3 = "l3-routed"


@dataclass(frozen=True, slots=True)
class Interconnect:
    """What a ``network_stitch`` spec asks of the site's BGPVPN interconnect."""

    network: str  # the Meridian name of the stitched network (and of the site's network)
    project: str  # the tenant's project: the BGPVPN and router are made in it
    kind: str  # l2-stretched (an l2 BGPVPN) or l3-routed (l3, and a router)
    route_target: str  # ASN:N, allocated by the broker's ledger
    route_distinguisher: str

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any]) -> Interconnect:
        try:
            return cls(
                name,
                str(spec["project"]),
                str(spec["kind"]),
                str(spec["route_target"]),
                str(spec.get("route_distinguisher") or spec["route_target"]),
            )
        except KeyError as exc:
            raise errors.InvalidSpec(
                str(exc.args[0]),
                "is required for the interconnect",
                kind="network_stitch",
                name=name,
            ) from None


def ensure(cloud: Cloud, want: Interconnect) -> dict[str, str]:
    """The BGPVPN (and router) of ``want``; their ids."""
    conn = cloud.admin()
    name = cloud.name_of(want.network)
    who = ("network_stitch", want.network)
    net = network_id(cloud, who, want.network)
    vpn = _bgpvpn(conn, name)
    attrs = {
        "route_targets": [want.route_target],
        "route_distinguishers": [want.route_distinguisher],
    }
    if vpn is None:
        vpn = conn.network.create_bgpvpn(
            name=name,
            type="l3" if want.kind == L3 else "l2",
            project_id=cloud.project_id(want.project),
            **attrs,
        )
    elif (
        list(vpn.route_targets or []) != attrs["route_targets"]
        or list(vpn.route_distinguishers or []) != attrs["route_distinguishers"]
    ):
        vpn = conn.network.update_bgpvpn(vpn, **attrs)
    if not any(a.network_id == net for a in conn.network.bgpvpn_network_associations(vpn)):
        conn.network.create_bgpvpn_network_association(vpn, network_id=net)
    out = {"bgpvpn": str(vpn.id), "route_target": want.route_target}
    if want.kind == L3:
        out["router"] = _router(cloud, want, name)
    return out


def _router(cloud: Cloud, want: Interconnect, name: str) -> str:
    conn = cloud.admin()
    subnet = cloud.require(("network_stitch", want.network), "subnet", want.network)
    router = _one(conn.network.routers(name=name))
    if router is None:
        router = conn.network.create_router(name=name, project_id=cloud.project_id(want.project))
    ports = conn.network.ports(device_id=router.id)
    if not any(ip.get("subnet_id") == subnet.id for p in ports for ip in p.fixed_ips or []):
        conn.network.add_interface_to_router(router, subnet=subnet.id)
    return str(router.id)


def remove(cloud: Cloud, network: str) -> None:
    """Everything ``ensure`` made for ``network``; nothing there is fine."""
    conn = cloud.admin()
    name = cloud.name_of(network)
    vpn = _bgpvpn(conn, name)
    if vpn is not None:
        for assoc in list(conn.network.bgpvpn_network_associations(vpn)):
            conn.network.delete_bgpvpn_network_association(vpn, assoc, ignore_missing=True)
        conn.network.delete_bgpvpn(vpn, ignore_missing=True)
    router = _one(conn.network.routers(name=name))
    if router is not None:
        for port in list(conn.network.ports(device_id=router.id)):
            for ip in port.fixed_ips or []:
                conn.network.remove_interface_from_router(router, subnet=ip["subnet_id"])
        conn.network.delete_router(router, ignore_missing=True)


def _bgpvpn(conn: Any, name: str) -> Any:
    """networking-bgpvpn's API does not filter by name: the one of ``name``, else None."""
    return _one(v for v in conn.network.bgpvpns() if v.name == name)


def _one(found: Any) -> Any:
    items = list(found)
    if len(items) > 1:
        raise errors.DriverError(
            "network_stitch", items[0].name, f"{len(items)} objects share one name", temporary=False
        )
    return items[0] if items else None
