"""Flavors: public, named and marked (in the description) per Meridian object.

What Nova cannot change in place (vCPUs, RAM, disk) replaces the flavor; extra specs are
brought to the spec's exactly, keys no longer wanted removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from siteagent import models
from siteagent.drivers import specs
from siteagent.drivers.openstack.cloud import Cloud, Found
from siteagent.drivers.openstack.kind import Owned
from siteagent.drivers.openstack_support import Marker, find_marker


class Flavors(Owned[specs.FlavorSpec]):
    kind = "flavor"
    spec_type = specs.FlavorSpec

    def candidates(self, cloud: Cloud, name: str) -> Iterable[Found]:
        cname = cloud.name_of(name)
        for f in cloud.admin().compute.flavors(is_public=None):
            if f.name == cname:
                yield f, find_marker(f.description)

    def converge(
        self,
        cloud: Cloud,
        obj: models.DesiredObject,
        spec: specs.FlavorSpec,
        marker: Marker,
        old: Any,
    ) -> Any:
        conn = cloud.admin()
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
                name=cloud.name_of(obj.name),
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

    def remove(self, cloud: Cloud, name: str, found: Any) -> None:
        cloud.admin().compute.delete_flavor(found, ignore_missing=True)


HANDLER = Flavors()
