"""Security groups, in the spec's project, with exactly the spec's IPv4 rules.

Rules Meridian adds are described ``meridian``; only those are ever removed, so a rule
someone else added to a Meridian group stays (and counts, when it matches a wanted one).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from siteagent import models
from siteagent.drivers import specs
from siteagent.drivers.openstack.cloud import Cloud, Found, tagged
from siteagent.drivers.openstack.kind import Owned
from siteagent.drivers.openstack_support import PREFIX as PREFIX_KEY
from siteagent.drivers.openstack_support import Marker


class SecurityGroups(Owned[specs.SecurityGroupSpec]):
    kind = "security_group"
    spec_type = specs.SecurityGroupSpec

    def candidates(self, cloud: Cloud, name: str) -> Iterable[Found]:
        return tagged(cloud.admin().network.security_groups(name=cloud.name_of(name)))

    def converge(
        self,
        cloud: Cloud,
        obj: models.DesiredObject,
        spec: specs.SecurityGroupSpec,
        marker: Marker,
        old: Any,
    ) -> Any:
        conn = cloud.admin()
        if old is None:
            group = conn.network.create_security_group(
                name=cloud.name_of(obj.name),
                description=str(marker),
                project_id=cloud.project_id(spec.project),
            )
        else:
            group = conn.network.update_security_group(old, description=str(marker))
        conn.network.set_tags(group, [str(marker)])
        wanted = {
            _rule_key(r.direction, r.protocol, r.port_min, r.port_max, r.remote_ip_prefix)
            for r in spec.rules
        }
        have: dict[tuple[Any, ...], Any] = {}
        for rule in conn.network.security_group_rules(security_group_id=group.id):
            key = _rule_key(
                rule.direction,
                rule.protocol or "any",
                rule.port_range_min,
                rule.port_range_max,
                rule.remote_ip_prefix,
            )
            if rule.ether_type == "IPv4" and key in wanted and key not in have:
                have[key] = rule
            elif rule.description == PREFIX_KEY:  # ours, no longer wanted
                conn.network.delete_security_group_rule(rule, ignore_missing=True)
        for r in spec.rules:
            key = _rule_key(r.direction, r.protocol, r.port_min, r.port_max, r.remote_ip_prefix)
            if key in have:
                continue
            conn.network.create_security_group_rule(
                security_group_id=group.id,
                direction=r.direction,
                ether_type="IPv4",
                protocol=None if r.protocol == "any" else r.protocol,
                port_range_min=r.port_min,
                port_range_max=r.port_max,
                remote_ip_prefix=r.remote_ip_prefix,
                description=PREFIX_KEY,
            )
            have[key] = True
        return conn.network.get_security_group(group.id)

    def remove(self, cloud: Cloud, name: str, found: Any) -> None:
        cloud.admin().network.delete_security_group(found, ignore_missing=True)


def _rule_key(
    direction: str, protocol: str, low: int | None, high: int | None, prefix: str | None
) -> tuple[Any, ...]:
    return (direction, protocol, low, high, prefix)


HANDLER = SecurityGroups()
