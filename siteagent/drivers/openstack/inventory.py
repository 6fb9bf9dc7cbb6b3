"""Inventory and usage of an OpenStack site, read from Nova and Placement.

Each compute resource provider (a hypervisor's root provider) becomes one ``Host`` with
one NUMA cell holding its VCPU/PCPU/MEMORY_MB totals and usages; ``CUSTOM_HUGEPAGES_*``
classes become huge page pools and nested providers with ``SRIOV_NET_VF`` become SR-IOV
pools (physical network from a ``CUSTOM_PHYSNET_*`` trait). Traits, DISK_GB and the
hypervisor state go into the host's ``traits``. The functions are blocking: the driver
runs them in a worker thread.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from openstack import exceptions as os_exc

from siteagent import models

PLACEMENT_VERSION = "1.14"
_HUGEPAGES = re.compile(r"CUSTOM_HUGEPAGES_(\d+)([KMG])B?")
_UNIT_KB = {"K": 1, "M": 1024, "G": 1024 * 1024}


def _get(conn: Any, path: str) -> Any:
    response = conn.placement.get(path, microversion=PLACEMENT_VERSION)
    os_exc.raise_from_response(response)
    return response.json()


def _amounts(conn: Any, uuid: str) -> tuple[dict[str, dict[str, Any]], dict[str, int], list[str]]:
    inventories = _get(conn, f"/resource_providers/{uuid}/inventories")["inventories"]
    usages = _get(conn, f"/resource_providers/{uuid}/usages")["usages"]
    traits = _get(conn, f"/resource_providers/{uuid}/traits")["traits"]
    return inventories, usages, traits


def _usable(inventories: dict[str, dict[str, Any]], rc: str) -> int:
    item = inventories.get(rc)
    if item is None:
        return 0
    return int(item.get("total", 0)) - int(item.get("reserved", 0))


def inventory(connect: Callable[[], Any]) -> models.Inventory:
    conn = connect()
    states = {h.name: (h.state, h.status) for h in conn.compute.hypervisors(details=True) if h.name}
    providers = _get(conn, "/resource_providers")["resource_providers"]
    children: dict[str, list[dict[str, Any]]] = {}
    for rp in providers:
        parent = rp.get("parent_provider_uuid")
        if parent and parent != rp["uuid"]:
            children.setdefault(parent, []).append(rp)
    hosts = []
    for rp in providers:
        parent = rp.get("parent_provider_uuid")
        if parent and parent != rp["uuid"]:
            continue
        inventories, usages, traits = _amounts(conn, rp["uuid"])
        if "VCPU" not in inventories and "PCPU" not in inventories:
            continue  # not a compute node (a sharing storage pool, a network agent, ...)
        pages = []
        for rc in inventories:
            match = _HUGEPAGES.fullmatch(rc)
            if match:
                size_kb = int(match.group(1)) * _UNIT_KB[match.group(2)]
                total = _usable(inventories, rc)
                pages.append(models.HugePages(size_kb, total, total - usages.get(rc, 0)))
        pools = []
        for child in children.get(rp["uuid"], []):
            c_inv, c_use, c_traits = _amounts(conn, child["uuid"])
            if "SRIOV_NET_VF" not in c_inv:
                continue
            physnet = next(
                (
                    t[len("CUSTOM_PHYSNET_") :].lower()
                    for t in c_traits
                    if t.startswith("CUSTOM_PHYSNET_")
                ),
                "",
            )
            pools.append(
                models.SriovPool(
                    physnet=physnet,
                    device=child["name"],
                    vfs_total=_usable(c_inv, "SRIOV_NET_VF"),
                    vfs_used=c_use.get("SRIOV_NET_VF", 0),
                )
            )
        vcpus = _usable(inventories, "VCPU")
        pcpus = _usable(inventories, "PCPU")
        cell = models.NumaCell(
            id=0,
            cpus_total=vcpus + pcpus,
            pcpus_total=pcpus,
            memory_mb=_usable(inventories, "MEMORY_MB"),
            pcpus_used=usages.get("PCPU", 0),
            vcpus_used=usages.get("VCPU", 0),
            memory_used_mb=usages.get("MEMORY_MB", 0),
            hugepages=tuple(sorted(pages, key=lambda p: p.page_size_kb)),
            sriov=tuple(pools),
        )
        labels = {trait: "true" for trait in traits}
        labels["disk_gb"] = str(_usable(inventories, "DISK_GB"))
        labels["disk_gb_used"] = str(usages.get("DISK_GB", 0))
        state = states.get(rp["name"])
        if state is not None:
            labels["hypervisor_state"], labels["hypervisor_status"] = map(str, state)
        hosts.append(models.Host(name=rp["name"], cells=(cell,), traits=labels))
    hosts.sort(key=lambda h: h.name)
    return models.Inventory(hosts=tuple(hosts), collected_unix_ms=int(time.time() * 1000))


def usage(connect: Callable[[], Any]) -> models.Usage:
    """Instances, cores, RAM and ports per Keystone project id, over all projects."""
    conn = connect()
    projects: dict[str, dict[str, int]] = {}
    for server in conn.compute.servers(details=True, all_projects=True):
        amounts = projects.setdefault(str(server.project_id), {})
        flavor = server.flavor or {}
        amounts["instances"] = amounts.get("instances", 0) + 1
        amounts["cores"] = amounts.get("cores", 0) + int(flavor.get("vcpus") or 0)
        amounts["ram_mb"] = amounts.get("ram_mb", 0) + int(flavor.get("ram") or 0)
    for port in conn.network.ports():
        amounts = projects.setdefault(str(port.project_id), {})
        amounts["ports"] = amounts.get("ports", 0) + 1
    return models.Usage(projects=projects)
