"""Quota sets: the broker's per-project limits, pushed to Nova and Neutron.

A project's quota set always exists and is never deleted: applying sets the limits the
spec names (Nova's and Neutron's own names, mapped below), observing reports nothing (the
object lives in the reconciler) and deleting leaves the project's limits as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from siteagent import errors, models
from siteagent.drivers import specs
from siteagent.drivers.openstack.cloud import Cloud, Found

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


class Quotas:
    kind: ClassVar[str] = "quota"
    long: ClassVar[bool] = False

    def candidates(self, cloud: Cloud, name: str) -> Iterable[Found]:
        return ()

    def apply(
        self, cloud: Cloud, obj: models.DesiredObject, spec: specs.Spec
    ) -> models.ObjectStatus:
        if not isinstance(spec, specs.QuotaSpec):
            raise TypeError(f"quota handler given a {type(spec).__name__}")
        project_id = cloud.project_id(spec.project)
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
        conn = cloud.admin()
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

    def observe(self, cloud: Cloud, name: str) -> models.ObjectStatus | None:
        return None  # a quota set always exists; its object lives in the reconciler

    def delete(self, cloud: Cloud, name: str) -> models.ObjectStatus:
        # the project keeps its limits; quota sets are never deleted
        return models.ObjectStatus(self.kind, name, 0, models.ObjectState.DELETED)


HANDLER = Quotas()
