"""Networks, in the spec's project, marked by tag and description.

A network's provider segment (type, physical network, segmentation id) cannot change in
place: a new generation that asks for another one is refused for good rather than the
network replaced under running servers. Only ``shared`` and the MTU are updated.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from siteagent import errors, models
from siteagent.drivers import specs
from siteagent.drivers.openstack.cloud import Cloud, Found, tagged
from siteagent.drivers.openstack.kind import Owned
from siteagent.drivers.openstack_support import Marker


class Networks(Owned[specs.NetworkSpec]):
    kind = "network"
    spec_type = specs.NetworkSpec

    def candidates(self, cloud: Cloud, name: str) -> Iterable[Found]:
        return tagged(cloud.admin().network.networks(name=cloud.name_of(name)))

    def converge(
        self,
        cloud: Cloud,
        obj: models.DesiredObject,
        spec: specs.NetworkSpec,
        marker: Marker,
        old: Any,
    ) -> Any:
        conn = cloud.admin()
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
            changes: dict[str, Any] = {"description": str(marker), "is_shared": spec.shared}
            if spec.mtu is not None:
                changes["mtu"] = spec.mtu
            network = conn.network.update_network(old, **changes)
        else:
            attrs: dict[str, Any] = {
                "name": cloud.name_of(obj.name),
                "description": str(marker),
                "project_id": cloud.project_id(spec.project),
                "is_shared": spec.shared,
                "provider_network_type": spec.network_type,
            }
            if spec.physnet is not None:
                attrs["provider_physical_network"] = spec.physnet
            if spec.segmentation_id is not None:
                attrs["provider_segmentation_id"] = spec.segmentation_id
            if spec.mtu is not None:
                attrs["mtu"] = spec.mtu
            network = conn.network.create_network(**attrs)
        conn.network.set_tags(network, [str(marker)])
        return conn.network.get_network(network.id)

    def remove(self, cloud: Cloud, name: str, found: Any) -> None:
        cloud.admin().network.delete_network(found, ignore_missing=True)


def network_id(cloud: Cloud, who: tuple[str, str], ref: str) -> str:
    """The Meridian network ``ref``, else the cloud's own network of that name or id."""
    return cloud.resolve_id(who, "network", ref, cloud.admin().network.find_network)


HANDLER = Networks()
