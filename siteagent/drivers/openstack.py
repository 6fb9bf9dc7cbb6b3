"""The ``Driver`` for a real OpenStack site, through openstacksdk.

Credentials come only from the agent's own ``clouds.yaml`` / ``OS_*`` (the cloud named in
``settings.openstack.cloud``); nothing the driver returns carries one (invariant 6).
Every blocking SDK call runs in a worker thread with a deadline, and every foreign error
is translated at one boundary (``openstack_support.call``).

Objects are found by their cloud name ``meridian-<site>-<name>`` and owned only when they
carry the marker ``meridian:<site>/<kind>/<name>:gen=N``; the marker's generation makes
re-applying a no-op (invariant 4). Project-scoped objects are created through a
connection scoped to the spec's project (``-`` or empty: the agent's own project), so they
belong to it natively. The Neutron kinds (security groups, networks, subnets, ports) are
applied in ``openstack_network``, inventory and usage are read in ``openstack_inventory``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path
from typing import Any, BinaryIO

from openstack import exceptions as os_exc

from siteagent import errors, models
from siteagent.drivers import base, specs
from siteagent.drivers import openstack_inventory as inv
from siteagent.drivers.openstack_network import NeutronObjects, port_outputs
from siteagent.drivers.openstack_support import (
    HashingReader,
    Marker,
    call,
    cloud_name,
    connect,
    connect_as_project,
    find_marker,
    not_found,
)
from siteagent.settings import AgentSettings

log = logging.getLogger(__name__)

NOVA_QUOTAS = {
    "instances": "instances",
    "cores": "cores",
    "ram_mb": "ram",
    "keypairs": "key_pairs",
    "server_groups": "server_groups",
    "server_group_members": "server_group_members",
}
NEUTRON_QUOTAS = {
    "networks": "network",
    "subnets": "subnet",
    "ports": "port",
    "security_groups": "security_group",
    "security_group_rules": "security_group_rule",
    "routers": "router",
    "floating_ips": "floatingip",
}
NOT_AT_SITE = ("volumes", "gigabytes", "sriov_vfs", "hugepages_mb", "pinned_cores")
"""Classes the broker's quota push carries that this driver sets no site quota for (Cinder
is not driven; no OpenStack service keeps a quota of the NFV classes): the global ledger
still enforces them at admission, and the status lists them as ``not_enforced``."""
_CHUNK = 1 << 20
PREFIX_KEY = "meridian"
"""Server metadata key, image property and rule description that hold the marker."""


class OpenStackDriver(NeutronObjects):
    """One OpenStack site; implements ``drivers.base.Driver``."""

    def __init__(
        self,
        site: str,
        cloud: str = "",
        *,
        timeout: float = 60.0,
        image_timeout: float = 900.0,
        connection: Any = None,
    ) -> None:
        self.site = site
        self.cloud = cloud
        self.timeout = timeout
        self.image_timeout = image_timeout
        self._conn: Any = connection
        self._scoped: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> OpenStackDriver:
        return cls(settings.site_id, settings.openstack.cloud)

    # -- connections -----------------------------------------------------------------------

    def _admin(self) -> Any:
        if self._conn is None:
            kwargs: dict[str, Any] = {"api_timeout": self.timeout}
            if self.cloud:
                kwargs["cloud"] = self.cloud
            self._conn = connect(**kwargs)
        return self._conn

    def _for(self, project: str) -> Any:
        """A connection scoped to ``project`` (name or id); the agent's own for ``-``/empty."""
        conn = self._admin()
        if project in ("", "-") or project in (conn.current_project_id, self._own_name()):
            return conn
        if project not in self._scoped:
            # by id: a tenant is a Keystone project id, and the SDK takes a bare string for
            # a project *name*
            found = conn.identity.find_project(project, ignore_missing=True)
            ref: str | dict[str, Any] = project
            if found is not None:
                ref = {"id": found.id, "domain_id": found.domain_id}
            self._scoped[project] = connect_as_project(conn, ref)
        return self._scoped[project]

    def _own_name(self) -> str:
        auth = self._admin().config.get_auth_args()
        return str(auth.get("project_name") or "")

    def _project_id(self, project: str) -> str:
        conn = self._admin()
        if project in ("", "-"):
            return str(conn.current_project_id)
        found = conn.identity.find_project(project, ignore_missing=True)
        if found is None:
            raise errors.DriverError("project", project, "no such project", temporary=False)
        return str(found.id)

    # -- Driver ----------------------------------------------------------------------------

    async def inventory(self) -> models.Inventory:
        return await call("inventory", self.site, self.timeout, inv.inventory, self._admin)

    async def usage(self) -> models.Usage:
        return await call("usage", self.site, self.timeout, inv.usage, self._admin)

    async def apply(self, obj: models.DesiredObject) -> models.ObjectStatus:
        if not base.is_known(obj.kind):
            raise errors.InvalidSpec("kind", f"unknown kind {obj.kind!r}", kind=obj.kind)
        if obj.deleted:
            return await self.delete(obj.kind, obj.name)
        parsed = specs.parse(obj.kind, obj.name, obj.spec)
        timeout = self.image_timeout if obj.kind == "image" else self.timeout
        return await call(obj.kind, obj.name, timeout, self._apply, obj, parsed)

    async def observe(self, kind: str, name: str) -> models.ObjectStatus | None:
        if not base.is_known(kind):
            return None
        return await call(kind, name, self.timeout, self._observe, kind, name)

    async def delete(self, kind: str, name: str) -> models.ObjectStatus:
        if not base.is_known(kind):
            raise errors.InvalidSpec("kind", f"unknown kind {kind!r}", kind=kind, name=name)
        return await call(kind, name, self.timeout, self._delete, kind, name)

    async def close(self) -> None:
        conns = [self._conn, *self._scoped.values()]
        self._conn = None
        self._scoped.clear()
        for conn in conns:
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # closing is best effort
                    log.debug("closing an OpenStack connection failed", exc_info=True)

    async def download_image(self, name: str, dest: Path) -> models.ObjectStatus:
        """Stream a Meridian image to ``dest``, checking its sha256 and Glance's hash."""
        return await call("image", name, self.image_timeout, self._download, name, dest)

    # -- finding owned objects -------------------------------------------------------------

    def _marker(self, kind: str, name: str, generation: int) -> Marker:
        return Marker(self.site, kind, name, generation)

    def _owned(
        self, kind: str, name: str, found: list[tuple[Any, Marker | None]]
    ) -> tuple[Any, Marker | None]:
        """The one object among ``found`` (same cloud name) that carries our marker."""
        want = self._marker(kind, name, 0)
        ours = [(obj, marker) for obj, marker in found if want.same_object(marker)]
        if len(ours) > 1:
            raise errors.DriverError(
                kind, name, f"{len(ours)} Meridian objects share one name", temporary=False
            )
        if not ours and found:
            raise errors.DriverError(
                kind,
                name,
                f"an object named {cloud_name(self.site, name)!r} exists without Meridian's "
                "marker; it is not Meridian's and is left alone",
                temporary=False,
            )
        return ours[0] if ours else (None, None)

    def _find(self, kind: str, name: str) -> tuple[Any, Marker | None]:
        cname = cloud_name(self.site, name)
        conn = self._admin()
        found: list[tuple[Any, Marker | None]] = []
        if kind == "flavor":
            for f in conn.compute.flavors(is_public=None):
                if f.name == cname:
                    found.append((f, find_marker(f.description)))
        elif kind == "server_group":
            for g in conn.compute.server_groups(all_projects=True):
                if g.name == cname:  # no metadata: the exact cloud name is the marker
                    found.append((g, self._marker(kind, name, 1)))
        elif kind == "keypair":
            for k in conn.compute.keypairs():
                if k.name == cname:
                    found.append((k, self._marker(kind, name, 1)))
        elif kind == "security_group":
            for g in conn.network.security_groups(name=cname):
                found.append((g, find_marker(g.tags, g.description)))
        elif kind in ("network", "subnet", "port"):
            lister = {
                "network": conn.network.networks,
                "subnet": conn.network.subnets,
                "port": conn.network.ports,
            }[kind]
            for o in lister(name=cname):
                found.append((o, find_marker(o.tags, o.description)))
        elif kind == "server":
            for s in conn.compute.servers(all_projects=True, name=f"^{cname}$"):
                if s.name == cname:
                    found.append((s, find_marker((s.metadata or {}).get(PREFIX_KEY))))
        elif kind == "image":
            for i in conn.image.images(name=cname):
                found.append((i, find_marker((i.properties or {}).get(PREFIX_KEY), i.tags)))
        return self._owned(kind, name, found)

    # -- apply -----------------------------------------------------------------------------

    def _apply(self, obj: models.DesiredObject, spec: specs.Spec) -> models.ObjectStatus:
        marker = self._marker(obj.kind, obj.name, obj.generation)
        if isinstance(spec, specs.QuotaSpec):
            return self._apply_quota(obj, spec)
        existing, old = self._find(obj.kind, obj.name)
        if existing is not None and old is not None and old.generation >= obj.generation:
            return self._status(obj.kind, obj.name, existing, obj.generation)
        handler = getattr(self, f"_apply_{obj.kind}")
        result = handler(obj, spec, marker, existing)
        return self._status(obj.kind, obj.name, result, obj.generation)

    def _apply_flavor(
        self, obj: models.DesiredObject, spec: specs.FlavorSpec, marker: Marker, old: Any
    ) -> Any:
        conn = self._admin()
        same = old is not None and (old.vcpus, old.ram, old.disk) == (
            spec.vcpus,
            spec.ram_mb,
            spec.disk_gb,
        )
        if old is not None and not same:
            conn.compute.delete_flavor(old, ignore_missing=True)
            old = None
        if old is None:
            flavor = conn.compute.create_flavor(
                name=cloud_name(self.site, obj.name),
                vcpus=spec.vcpus,
                ram=spec.ram_mb,
                disk=spec.disk_gb,
                is_public=True,
                description=str(marker),
            )
        else:
            flavor = conn.compute.update_flavor(old, description=str(marker))
        current = conn.compute.fetch_flavor_extra_specs(flavor).extra_specs or {}
        for key in set(current) - set(spec.extra_specs):
            conn.compute.delete_flavor_extra_specs_property(flavor, key)
        wanted = {k: v for k, v in spec.extra_specs.items() if current.get(k) != v}
        if wanted:
            conn.compute.create_flavor_extra_specs(flavor, wanted)
        return conn.compute.get_flavor(flavor.id)

    def _apply_server_group(
        self, obj: models.DesiredObject, spec: specs.ServerGroupSpec, marker: Marker, old: Any
    ) -> Any:
        if old is not None:
            if old.policy == spec.policy:
                return old
            raise errors.DriverError(
                obj.kind, obj.name, "a server group's policy cannot change", temporary=False
            )
        c = self._for(spec.project)
        return c.compute.create_server_group(
            name=cloud_name(self.site, obj.name), policy=spec.policy
        )

    def _apply_keypair(
        self, obj: models.DesiredObject, spec: specs.KeypairSpec, marker: Marker, old: Any
    ) -> Any:
        c = self._for(spec.project)
        if old is not None:
            if old.public_key.strip() == spec.public_key.strip():
                return old
            c.compute.delete_keypair(old, ignore_missing=True)
        return c.compute.create_keypair(
            name=cloud_name(self.site, obj.name), public_key=spec.public_key
        )

    def _image_id(self, who: tuple[str, str], ref: str) -> str:
        image, _ = self._find("image", ref)
        if image is None:
            image = self._admin().image.find_image(ref, ignore_missing=True)
        if image is None:
            raise errors.DriverError(
                *who, f"image {ref!r} not found", temporary=True, retry_after=1.0
            )
        return str(image.id)

    def _flavor_id(self, who: tuple[str, str], ref: str) -> str:
        flavor, _ = self._find("flavor", ref)
        if flavor is None:
            flavor = self._admin().compute.find_flavor(ref, ignore_missing=True)
        if flavor is None:
            raise errors.DriverError(
                *who, f"flavor {ref!r} not found", temporary=True, retry_after=1.0
            )
        return str(flavor.id)

    def _apply_server(
        self, obj: models.DesiredObject, spec: specs.ServerSpec, marker: Marker, old: Any
    ) -> Any:
        who = (obj.kind, obj.name)
        c = self._for(spec.project)
        if old is not None:
            c.compute.set_server_metadata(old, **{PREFIX_KEY: str(marker)})
            return c.compute.get_server(old.id)
        attrs: dict[str, Any] = {
            "name": cloud_name(self.site, obj.name),
            "flavor_id": self._flavor_id(who, spec.flavor),
            "image_id": self._image_id(who, spec.image),
            "metadata": {PREFIX_KEY: str(marker)},
        }
        if spec.ports:
            ports = []
            for ref in spec.ports:
                port, _ = self._find("port", ref)
                if port is None:
                    raise errors.DriverError(
                        *who, f"port {ref!r} not found", temporary=True, retry_after=1.0
                    )
                if port.device_id:
                    raise errors.DriverError(
                        *who, f"port {ref!r} is in use by {port.device_id}", temporary=False
                    )
                ports.append({"port": port.id})
            attrs["networks"] = ports
        else:
            attrs["networks"] = "none"
        if spec.keypair is not None:
            key, _ = self._find("keypair", spec.keypair)
            if key is None:
                raise errors.DriverError(
                    *who, f"keypair {spec.keypair!r} not found", temporary=True, retry_after=1.0
                )
            attrs["key_name"] = key.name
        if spec.server_group is not None:
            group, _ = self._find("server_group", spec.server_group)
            if group is None:
                raise errors.DriverError(
                    *who,
                    f"server_group {spec.server_group!r} not found",
                    temporary=True,
                    retry_after=1.0,
                )
            attrs["scheduler_hints"] = {"group": group.id}
        return c.compute.create_server(**attrs)

    def _apply_image(
        self, obj: models.DesiredObject, spec: specs.ImageSpec, marker: Marker, old: Any
    ) -> Any:
        conn = self._admin()
        if old is not None and old.status == "active":
            if (old.properties or {}).get("meridian_sha256") == spec.sha256:
                conn.image.update_image(old, **{PREFIX_KEY: str(marker)})
                return conn.image.get_image(old.id)
            conn.image.delete_image(old, ignore_missing=True)
        elif old is not None:
            conn.image.delete_image(old, ignore_missing=True)
        source = obj.spec.get("source")
        held = None
        if not isinstance(source, str) or not source:
            # no file: reuse the bytes of an image this site already holds (one Meridian
            # uploaded, or replication brought), verified again on the way in
            held = self._held_copy(spec)
            if held is None:
                raise errors.DriverError(
                    obj.kind,
                    obj.name,
                    f"no source file, and no image at this site holds sha256 {spec.sha256}",
                    temporary=True,
                    retry_after=5.0,
                )
            source = f"site image {held.id}"
        else:
            path = Path(source)
            try:
                size = path.stat().st_size
            except OSError as exc:
                raise errors.InvalidSpec(
                    "source", f"cannot read {source}: {exc.strerror}", kind=obj.kind, name=obj.name
                ) from exc
            if size != spec.size:
                raise errors.InvalidSpec(
                    "size",
                    f"{source} has {size} bytes, not {spec.size}",
                    kind=obj.kind,
                    name=obj.name,
                )
        body = {
            "name": cloud_name(self.site, obj.name),
            "disk_format": spec.disk_format,
            "container_format": spec.container_format,
            "visibility": "private" if spec.project not in ("", "-") else "shared",
            "tags": [PREFIX_KEY],
            PREFIX_KEY: str(marker),
            "meridian_sha256": spec.sha256,
        }
        created = conn.image.post("/images", json=body)
        _raise_for(created)
        image_id = created.json()["id"]
        with contextlib.ExitStack() as stack:
            if held is None:
                stream: BinaryIO = stack.enter_context(Path(source).open("rb"))
            else:
                response = conn.image.download_image(held, stream=True)
                stack.callback(response.close)
                stream = response.raw
            reader = HashingReader(stream, spec.size, _CHUNK)
            uploaded = conn.image.put(
                f"/images/{image_id}/file",
                data=reader,
                headers={"Content-Type": "application/octet-stream"},
            )
        _raise_for(uploaded)
        image = conn.image.get_image(image_id)
        problem = ""
        if reader.sha256.hexdigest() != spec.sha256:
            problem = f"sha256 of {source} is {reader.sha256.hexdigest()}, not {spec.sha256}"
        elif image.hash_algo == "sha512" and image.hash_value != reader.sha512.hexdigest():
            problem = "Glance's os_hash_value does not match the bytes sent"
        if problem:
            conn.image.delete_image(image_id, ignore_missing=True)
            raise errors.DriverError(obj.kind, obj.name, problem, temporary=False)
        return image

    def _held_copy(self, spec: specs.ImageSpec) -> Any:
        """An active image at this site with the bytes ``spec`` names, or None."""
        for image in self._admin().image.images(status="active"):
            props = image.properties or {}
            if props.get("meridian_sha256") == spec.sha256 and image.size == spec.size:
                return image
        return None

    def _apply_quota(self, obj: models.DesiredObject, spec: specs.QuotaSpec) -> models.ObjectStatus:
        conn = self._admin()
        project_id = self._project_id(spec.project)
        nova: dict[str, int] = {}
        neutron: dict[str, int] = {}
        skipped = sorted(k for k in spec.limits if k in NOT_AT_SITE)
        for key, value in spec.limits.items():
            if key in NOT_AT_SITE:
                continue
            if key in NOVA_QUOTAS:
                nova[NOVA_QUOTAS[key]] = value
            elif key in NEUTRON_QUOTAS:
                neutron[NEUTRON_QUOTAS[key]] = value
            else:
                raise errors.InvalidSpec(
                    f"limits.{key}",
                    f"unknown resource; one of {', '.join([*NOVA_QUOTAS, *NEUTRON_QUOTAS])}",
                    kind=obj.kind,
                    name=obj.name,
                )
        if nova:
            conn.compute.update_quota_set(project_id, **nova)
        if neutron:
            conn.network.update_quota(project_id, **neutron)
        return models.ObjectStatus(
            obj.kind,
            obj.name,
            obj.generation,
            models.ObjectState.READY,
            outputs={"project_id": project_id, "not_enforced": ",".join(skipped)},
        )

    # -- observe / delete ------------------------------------------------------------------

    def _observe(self, kind: str, name: str) -> models.ObjectStatus | None:
        if kind == "quota":
            return None  # a quota set always exists; its object lives in the reconciler
        found, marker = self._find(kind, name)
        if found is None or marker is None:
            return None
        return self._status(kind, name, found, marker.generation)

    def _delete(self, kind: str, name: str) -> models.ObjectStatus:
        gone = models.ObjectStatus(kind, name, 0, models.ObjectState.DELETED)
        if kind == "quota":
            return gone  # the project keeps its limits; quota sets are never deleted
        found, marker = self._find(kind, name)
        if found is None:
            return gone
        conn = self._admin()
        try:
            if kind == "flavor":
                conn.compute.delete_flavor(found, ignore_missing=True)
            elif kind == "server_group":
                conn.compute.delete_server_group(found, ignore_missing=True)
            elif kind == "keypair":
                conn.compute.delete_keypair(found, ignore_missing=True)
            elif kind == "security_group":
                conn.network.delete_security_group(found, ignore_missing=True)
            elif kind == "network":
                conn.network.delete_network(found, ignore_missing=True)
            elif kind == "subnet":
                conn.network.delete_subnet(found, ignore_missing=True)
            elif kind == "port":
                self._delete_port(name, found)
            elif kind == "server":
                conn.compute.delete_server(found, ignore_missing=True)
                conn.compute.wait_for_delete(found, interval=0.5, wait=self.timeout / 2)
            elif kind == "image":
                conn.image.delete_image(found, ignore_missing=True)
        except os_exc.HttpException as exc:
            if not not_found(exc):
                raise
        generation = marker.generation if marker is not None else 0
        return models.ObjectStatus(kind, name, generation, models.ObjectState.DELETED)

    def _status(self, kind: str, name: str, found: Any, generation: int) -> models.ObjectStatus:
        outputs = {"id": str(found.id)}
        state = models.ObjectState.READY
        message = ""
        if kind == "server":
            outputs["status"] = str(found.status)
            if found.compute_host:
                outputs["host"] = str(found.compute_host)
            if found.status == "ERROR":
                fault = found.fault or {}
                message = str(fault.get("message") or "server went to ERROR")
                return models.ObjectStatus(
                    kind, name, generation, models.ObjectState.FAILED, message, outputs=outputs
                )
            if found.status != "ACTIVE":
                state, message = models.ObjectState.PENDING, f"server is {found.status or 'BUILD'}"
        elif kind == "port":
            outputs.update(port_outputs(found))
        elif kind == "image":
            outputs["os_hash_value"] = str(found.hash_value or "")
            if found.status != "active":
                state, message = models.ObjectState.PENDING, f"image is {found.status}"
        return models.ObjectStatus(kind, name, generation, state, message, outputs=outputs)

    def _download(self, name: str, dest: Path) -> models.ObjectStatus:
        image, marker = self._find("image", name)
        if image is None or marker is None:
            raise errors.DriverError("image", name, "no such Meridian image", temporary=False)
        want = (image.properties or {}).get("meridian_sha256")
        response = self._admin().image.download_image(image, stream=True)
        sha256 = hashlib.sha256()
        glance = hashlib.new(image.hash_algo or "sha512")
        try:
            with dest.open("wb") as out:
                for chunk in response.iter_content(_CHUNK):
                    sha256.update(chunk)
                    glance.update(chunk)
                    out.write(chunk)
        finally:
            response.close()
        if sha256.hexdigest() != want or glance.hexdigest() != image.hash_value:
            dest.unlink(missing_ok=True)
            raise errors.DriverError(
                "image", name, "downloaded bytes do not match the image's checksums", temporary=True
            )
        return self._status("image", name, image, marker.generation)


def _raise_for(response: Any) -> None:
    """Raw requests go through the SDK's own error mapping, like its resource calls."""
    os_exc.raise_from_response(response)
