"""Servers, booted in the spec's project from a flavor, an image, ports, a keypair and a
server group that already exist (not there yet: a temporary error, retried).

The marker is in the server's metadata. A server is never rebuilt for a new generation:
it takes the new marker. Its status is PENDING until Nova says ACTIVE, FAILED on ERROR
(with Nova's fault message) or when Nova says its compute host is DOWN or UNKNOWN (the
host's nova-compute service is down: ``host_status``), and reports the compute host it
runs on and its role (``meridian:role`` in its metadata, set at create and on every new
generation). A planned host (``hypervisor_hostname``) is asked of Nova at create
(microversion 2.74's ``host``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from siteagent import errors, models
from siteagent.drivers import specs
from siteagent.drivers.openstack.cloud import Cloud, Found
from siteagent.drivers.openstack.kind import Owned
from siteagent.drivers.openstack_support import PREFIX as PREFIX_KEY
from siteagent.drivers.openstack_support import Marker, find_marker


HOST_LOST = ("DOWN", "UNKNOWN")
"""Nova's ``host_status`` of a server whose compute host's service is not up."""


class Servers(Owned[specs.ServerSpec]):
    kind = "server"
    spec_type = specs.ServerSpec

    def candidates(self, cloud: Cloud, name: str) -> Iterable[Found]:
        cname = cloud.name_of(name)
        for s in cloud.admin().compute.servers(all_projects=True, name=f"^{cname}$"):
            if s.name == cname:
                yield s, find_marker((s.metadata or {}).get(PREFIX_KEY))

    def converge(
        self,
        cloud: Cloud,
        obj: models.DesiredObject,
        spec: specs.ServerSpec,
        marker: Marker,
        old: Any,
    ) -> Any:
        who = (obj.kind, obj.name)
        c = cloud.scoped(spec.project)
        metadata = {PREFIX_KEY: str(marker)}
        if spec.role is not None:
            metadata[specs.ROLE_KEY] = spec.role
        if old is not None:
            c.compute.set_server_metadata(old, **metadata)
            return c.compute.get_server(old.id)
        admin = cloud.admin()
        attrs: dict[str, Any] = {
            "name": cloud.name_of(obj.name),
            "flavor_id": cloud.resolve_id(who, "flavor", spec.flavor, admin.compute.find_flavor),
            "image_id": cloud.resolve_id(who, "image", spec.image, admin.image.find_image),
            "metadata": metadata,
            "networks": _ports(cloud, who, spec.ports) if spec.ports else "none",
        }
        if spec.keypair is not None:
            attrs["key_name"] = cloud.require(who, "keypair", spec.keypair).name
        if spec.server_group is not None:
            group = cloud.require(who, "server_group", spec.server_group)
            attrs["scheduler_hints"] = {"group": group.id}
        if spec.host is not None:
            # the broker's planned host (Placement's provider: the compute host's node),
            # asked of Nova as the create-time host (microversion 2.74; the scheduler
            # still checks it, and refuses a host whose nova-compute is down)
            attrs["host"] = spec.host
        return c.compute.create_server(**attrs)

    def remove(self, cloud: Cloud, name: str, found: Any) -> None:
        conn = cloud.admin()
        conn.compute.delete_server(found, ignore_missing=True)
        conn.compute.wait_for_delete(found, interval=0.5, wait=cloud.timeout / 2)

    def outputs(self, found: Any) -> dict[str, str]:
        outputs = {"id": str(found.id), "status": str(found.status)}
        if found.compute_host:
            outputs["host"] = str(found.compute_host)
        role = (found.metadata or {}).get(specs.ROLE_KEY)
        if role:
            outputs["role"] = str(role)
        return outputs

    def state(self, found: Any) -> tuple[models.ObjectState, str]:
        if found.status == "ERROR":
            fault = found.fault or {}
            return models.ObjectState.FAILED, str(fault.get("message") or "server went to ERROR")
        if found.host_status in HOST_LOST:  # its nova-compute service is down (2.16+)
            where = f"compute host {found.compute_host}"
            return models.ObjectState.FAILED, f"{where} is {found.host_status}"
        if found.status != "ACTIVE":
            return models.ObjectState.PENDING, f"server is {found.status or 'BUILD'}"
        return models.ObjectState.READY, ""


def _ports(cloud: Cloud, who: tuple[str, str], refs: tuple[str, ...]) -> list[dict[str, str]]:
    """The server's NICs: Meridian ports, each free (a port in use is refused for good)."""
    ports = []
    for ref in refs:
        port = cloud.require(who, "port", ref)
        if port.device_id:
            raise errors.DriverError(
                *who, f"port {ref!r} is in use by {port.device_id}", temporary=False
            )
        ports.append({"port": port.id})
    return ports


HANDLER = Servers()
