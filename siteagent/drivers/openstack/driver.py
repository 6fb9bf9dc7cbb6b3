"""``OpenStackDriver``: the ``drivers.base.Driver`` of a real OpenStack site.

It validates the spec (``drivers.specs``), looks up the kind's handler in
``kinds.HANDLERS`` and runs it on the site's one ``cloud.Cloud`` in a worker thread with a
deadline, through ``openstack_support.call`` — the one boundary where foreign errors
become ``errors.DriverError``. Inventory and usage are read in ``inventory``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from siteagent import errors, models
from siteagent.drivers import specs
from siteagent.drivers.openstack import image, interconnect, inventory, kinds
from siteagent.drivers.openstack.cloud import Cloud
from siteagent.drivers.openstack.kind import Handler
from siteagent.drivers.openstack_support import call
from siteagent.settings import AgentSettings

STITCH = "network_stitch"


class OpenStackDriver:
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
        self.timeout = timeout
        self.image_timeout = image_timeout
        self._cloud = Cloud(
            site, cloud, timeout=timeout, finders=kinds.HANDLERS, connection=connection
        )

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> OpenStackDriver:
        return cls(settings.site_id, settings.openstack.cloud)

    async def inventory(self) -> models.Inventory:
        return await call(
            "inventory", self.site, self.timeout, inventory.inventory, self._cloud.admin
        )

    async def usage(self) -> models.Usage:
        return await call("usage", self.site, self.timeout, inventory.usage, self._cloud.admin)

    async def apply(self, obj: models.DesiredObject) -> models.ObjectStatus:
        handler = _handler(obj.kind, obj.name)
        if obj.deleted:
            return await self.delete(obj.kind, obj.name)
        parsed = specs.parse(obj.kind, obj.name, obj.spec)
        timeout = self.image_timeout if handler.long else self.timeout
        return await call(obj.kind, obj.name, timeout, handler.apply, self._cloud, obj, parsed)

    async def observe(self, kind: str, name: str) -> models.ObjectStatus | None:
        handler = kinds.HANDLERS.get(kind)
        if handler is None:
            return None
        return await call(kind, name, self.timeout, handler.observe, self._cloud, name)

    async def delete(self, kind: str, name: str) -> models.ObjectStatus:
        handler = _handler(kind, name)
        return await call(kind, name, self.timeout, handler.delete, self._cloud, name)

    async def close(self) -> None:
        self._cloud.close()

    async def interconnect(self, name: str, spec: Mapping[str, Any]) -> dict[str, str]:
        """A stitched network's BGPVPN (and router) at this site; their ids."""
        want = interconnect.Interconnect.from_spec(name, spec)
        return await call(STITCH, name, self.timeout, interconnect.ensure, self._cloud, want)

    async def disconnect(self, name: str) -> None:
        """Remove what ``interconnect`` made for ``name``."""
        await call(STITCH, name, self.timeout, interconnect.remove, self._cloud, name)

    async def download_image(self, name: str, dest: Path) -> models.ObjectStatus:
        """Stream a Meridian image to ``dest``, checking its sha256 and Glance's hash."""
        return await call(
            "image", name, self.image_timeout, image.HANDLER.download, self._cloud, name, dest
        )


def _handler(kind: str, name: str) -> Handler:
    handler = kinds.HANDLERS.get(kind)
    if handler is None:
        raise errors.InvalidSpec("kind", f"unknown kind {kind!r}", kind=kind, name=name)
    return handler
