"""Keypairs, made in the spec's project. A keypair has no metadata: its exact cloud name
is its marker (generation 1); a new public key replaces it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from siteagent import models
from siteagent.drivers import specs
from siteagent.drivers.openstack.cloud import Cloud, Found
from siteagent.drivers.openstack.kind import Owned
from siteagent.drivers.openstack_support import Marker


class Keypairs(Owned[specs.KeypairSpec]):
    kind = "keypair"
    spec_type = specs.KeypairSpec

    def candidates(self, cloud: Cloud, name: str) -> Iterable[Found]:
        cname = cloud.name_of(name)
        for k in cloud.admin().compute.keypairs():
            if k.name == cname:
                yield k, cloud.marker(self.kind, name, 1)

    def converge(
        self,
        cloud: Cloud,
        obj: models.DesiredObject,
        spec: specs.KeypairSpec,
        marker: Marker,
        old: Any,
    ) -> Any:
        c = cloud.scoped(spec.project)
        if old is not None:
            if old.public_key.strip() == spec.public_key.strip():
                return old
            c.compute.delete_keypair(old, ignore_missing=True)
        return c.compute.create_keypair(name=cloud.name_of(obj.name), public_key=spec.public_key)

    def remove(self, cloud: Cloud, name: str, found: Any) -> None:
        cloud.admin().compute.delete_keypair(found, ignore_missing=True)


HANDLER = Keypairs()
