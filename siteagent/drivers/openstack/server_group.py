"""Server groups, made in the spec's project. A server group has no metadata: its exact
cloud name is its marker (generation 1), and its policy cannot change."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from siteagent import errors, models
from siteagent.drivers import specs
from siteagent.drivers.openstack.cloud import Cloud, Found
from siteagent.drivers.openstack.kind import Owned
from siteagent.drivers.openstack_support import Marker


class ServerGroups(Owned[specs.ServerGroupSpec]):
    kind = "server_group"
    spec_type = specs.ServerGroupSpec

    def candidates(self, cloud: Cloud, name: str) -> Iterable[Found]:
        cname = cloud.name_of(name)
        for g in cloud.admin().compute.server_groups(all_projects=True):
            if g.name == cname:
                yield g, cloud.marker(self.kind, name, 1)

    def converge(
        self,
        cloud: Cloud,
        obj: models.DesiredObject,
        spec: specs.ServerGroupSpec,
        marker: Marker,
        old: Any,
    ) -> Any:
        if old is not None:
            if old.policy == spec.policy:
                return old
            raise errors.DriverError(
                obj.kind, obj.name, "a server group's policy cannot change", temporary=False
            )
        return cloud.scoped(spec.project).compute.create_server_group(
            name=cloud.name_of(obj.name), policy=spec.policy
        )

    def remove(self, cloud: Cloud, name: str, found: Any) -> None:
        cloud.admin().compute.delete_server_group(found, ignore_missing=True)


HANDLER = ServerGroups()
