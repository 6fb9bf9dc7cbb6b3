"""Neutron trunks, as part of their parent port (``port``): not a kind of their own.

A port whose spec has a ``trunk`` is the parent of a Neutron trunk marked
``<site>/trunk/<port>``: its subports are reconciled on each new generation. A trunk goes
before its parent port, and a subport leaves its trunk before it is deleted; a trunk
Meridian did not make is never touched.
"""

from __future__ import annotations

from typing import Any

from openstack import exceptions as os_exc

from siteagent import errors
from siteagent.drivers import specs
from siteagent.drivers.openstack.cloud import Cloud
from siteagent.drivers.openstack_support import Marker, find_marker, not_found

TRUNK = "trunk"
"""The kind in a trunk's marker: the trunk of port ``x`` is marked ``<site>/trunk/x``."""


def subports(
    cloud: Cloud, who: tuple[str, str], trunk: specs.TrunkSpec | None
) -> dict[str, tuple[str, int]] | None:
    """The wanted subports by Neutron port id: ``{id: (segmentation type, id)}``."""
    if trunk is None:
        return None
    wanted: dict[str, tuple[str, int]] = {}
    for sub in trunk.subports:
        port = cloud.require(who, "port", sub.port, label="subport")
        wanted[str(port.id)] = (sub.segmentation_type, sub.segmentation_id)
    return wanted


def _trunks(cloud: Cloud, **query: Any) -> list[Any] | None:
    """Trunks matching ``query``; None when this Neutron has no trunk extension."""
    try:
        return list(cloud.admin().network.trunks(**query))
    except os_exc.HttpException as exc:
        if not_found(exc):  # GET /v2.0/trunks is 404 without the service plugin
            return None
        raise


def _trunk_of(cloud: Cloud, who: tuple[str, str], port: Any, *, needed: bool = False) -> Any:
    """The trunk whose parent is ``port``, if any; refused when it is not Meridian's.

    ``needed``: the spec asks for a trunk, so a cloud without trunks is a permanent error.
    """
    want = Marker(cloud.site, TRUNK, who[1], 0)
    trunks = _trunks(cloud, port_id=port.id)
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


def reconcile(
    cloud: Cloud,
    who: tuple[str, str],
    spec: specs.PortSpec,
    marker: Marker,
    port: Any,
    wanted: dict[str, tuple[str, int]],
) -> None:
    """Creates the trunk on ``port``, or brings its subports to ``wanted``."""
    conn = cloud.admin()
    tmarker = str(Marker(cloud.site, TRUNK, who[1], marker.generation))
    trunk = _trunk_of(cloud, who, port, needed=True)
    if trunk is None:
        trunk = conn.network.create_trunk(
            name=cloud.name_of(who[1]),
            description=tmarker,
            project_id=cloud.project_id(spec.project),
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


def drop(cloud: Cloud, who: tuple[str, str], port: Any) -> None:
    """Deletes the Meridian trunk whose parent is ``port`` (with its subports)."""
    trunk = _trunk_of(cloud, who, port)
    if trunk is not None:
        cloud.admin().network.delete_trunk(trunk, ignore_missing=True)


def leave_all(cloud: Cloud, who: tuple[str, str], port: Any) -> None:
    """Takes ``port`` off every trunk it is a subport of (each must be Meridian's)."""
    # an unbound subport's device_owner stays empty (only binding sets trunk:subport),
    # and Neutron filters trunks by parent only: look at every trunk's subports
    for trunk in _trunks(cloud) or []:
        if not any(s.get("port_id") == port.id for s in trunk.sub_ports or []):
            continue
        if find_marker(trunk.tags, trunk.description) is None:
            raise errors.DriverError(
                *who,
                f"port is a subport of trunk {trunk.id}, which is not Meridian's",
                temporary=False,
            )
        cloud.admin().network.delete_trunk_subports(trunk, [{"port_id": port.id}])


def _subport_bodies(subports: dict[str, tuple[str, int]]) -> list[dict[str, Any]]:
    return [
        {"port_id": pid, "segmentation_type": kind, "segmentation_id": seg}
        for pid, (kind, seg) in sorted(subports.items(), key=lambda item: item[1][1])
    ]
