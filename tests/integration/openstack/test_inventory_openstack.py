"""The inventory of a minicloud site, read from its real Placement, matches its providers.

Checked against the services themselves: one host per Nova hypervisor and no other, each
with the VCPU allocation ratio and memory capacity of its Placement inventory. Nova's
fake driver makes flat trees (no NUMA providers), so the nested path is proven on
providers this test creates in the real Placement and removes afterwards: NUMA cell
providers (``HW_NUMA_ROOT``) under a real compute node's root, with a huge page provider
and a VF device below them; a host whose root has no CPUs (only its NUMA children do); and
a sharing disk pool, which is no host.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from siteagent import models
from siteagent.drivers.openstack import OpenStackDriver

pytestmark = [pytest.mark.openstack, pytest.mark.slow]

VERSION = "1.20"


def placement(conn: Any, method: str, path: str, body: Any = None) -> Any:
    response = getattr(conn.placement, method)(path, json=body, microversion=VERSION)
    assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
    return response.json() if response.content else None


class Providers:
    """Providers this test makes in the site's Placement; removed, children first, at the end."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.made: list[str] = []

    def make(
        self,
        name: str,
        parent: str | None = None,
        traits: tuple[str, ...] = (),
        **inventories: dict[str, Any],
    ) -> str:
        body: dict[str, Any] = {"name": name, "uuid": str(uuid.uuid4())}
        if parent is not None:
            body["parent_provider_uuid"] = parent
        rp = placement(self.conn, "post", "/resource_providers", body)
        self.made.append(rp["uuid"])
        generation = rp["generation"]
        if inventories:
            done = placement(
                self.conn,
                "put",
                f"/resource_providers/{rp['uuid']}/inventories",
                {"resource_provider_generation": generation, "inventories": inventories},
            )
            generation = done["resource_provider_generation"]
        if traits:
            for trait in traits:
                if trait.startswith("CUSTOM_"):
                    placement(self.conn, "put", f"/traits/{trait}")
            placement(
                self.conn,
                "put",
                f"/resource_providers/{rp['uuid']}/traits",
                {"resource_provider_generation": generation, "traits": list(traits)},
            )
        return str(rp["uuid"])

    def remove_all(self) -> None:
        for rp in reversed(self.made):
            self.conn.placement.delete(f"/resource_providers/{rp}", microversion=VERSION)


@pytest.fixture
def providers(conn: Any) -> Iterator[Providers]:
    made = Providers(conn)
    try:
        yield made
    finally:
        made.remove_all()


def roots(conn: Any) -> dict[str, dict[str, Any]]:
    """Root providers by name, with their inventories."""
    listing = placement(conn, "get", "/resource_providers")["resource_providers"]
    return {
        rp["name"]: placement(conn, "get", f"/resource_providers/{rp['uuid']}/inventories")[
            "inventories"
        ]
        for rp in listing
        if rp["parent_provider_uuid"] is None
    }


async def test_hosts_are_novas_hypervisors_with_placements_ratios(
    driver: OpenStackDriver, conn: Any
) -> None:
    inventory = await driver.inventory()
    hypervisors = {h.name for h in conn.compute.hypervisors()}
    assert {h.name for h in inventory.hosts} == hypervisors  # no extra host
    found = roots(conn)
    for host in inventory.hosts:
        vcpu, memory = found[host.name]["VCPU"], found[host.name]["MEMORY_MB"]
        assert host.cpu_allocation_ratio == vcpu["allocation_ratio"]
        (cell,) = host.cells  # Nova's fake driver nests nothing: the one-cell fallback
        assert cell.cpus_total - cell.pcpus_total == vcpu["total"] - vcpu["reserved"]
        capacity = int((memory["total"] - memory["reserved"]) * memory["allocation_ratio"])
        assert cell.memory_mb == capacity


async def test_nested_numa_providers_become_cells_and_a_root_without_cpus_is_a_host(
    driver: OpenStackDriver, conn: Any, providers: Providers, site: str
) -> None:
    compute = next(rp for rp in sorted(roots(conn)) if rp.startswith("site1-compute"))
    root = placement(conn, "get", f"/resource_providers?name={compute}")["resource_providers"][0]
    physnet = f"CUSTOM_PHYSNET_{site.upper()}"
    pages = "CUSTOM_MEMORY_PAGE_SIZE_2048"
    # cells under a real compute node: its own VCPU/MEMORY_MB stay on the root
    n0 = providers.make(f"{compute}_NUMA0", root["uuid"], ("HW_NUMA_ROOT",), PCPU={"total": 4})
    n1 = providers.make(f"{compute}_NUMA1", root["uuid"], ("HW_NUMA_ROOT",), PCPU={"total": 6})
    providers.make(f"{compute}_NUMA1_2M", n1, (pages,), MEMORY_MB={"total": 1024})
    providers.make(f"{compute}_0000:3b:00.0", n0, (physnet,), SRIOV_NET_VF={"total": 8})
    # a host whose CPUs and memory are only on its NUMA providers
    nested = providers.make(f"{site}-nested", None, (), DISK_GB={"total": 100})
    for n in (0, 1):
        providers.make(
            f"{site}-nested_NUMA{n}",
            nested,
            ("HW_NUMA_ROOT",),
            VCPU={"total": 8, "allocation_ratio": 2.0},
            MEMORY_MB={"total": 4096},
        )
    providers.make(f"{site}-shared-disk", None, (), DISK_GB={"total": 1000})

    by_name = {h.name: h for h in (await driver.inventory()).hosts}
    hypervisors = {h.name for h in conn.compute.hypervisors()}
    assert set(by_name) == hypervisors | {f"{site}-nested"}  # the disk pool is no host

    real = by_name[compute]
    own = roots(conn)[compute]
    vcpu = own["VCPU"]
    pcpu = own.get("PCPU", {"total": 0, "reserved": 0})
    assert [c.id for c in real.cells] == [0, 1]
    cell0, cell1 = real.cells
    # what the root holds counts in the lowest cell
    assert cell0.pcpus_total == 4 + pcpu["total"] - pcpu["reserved"]
    assert cell1.pcpus_total == 6
    assert cell0.cpus_total - cell0.pcpus_total == vcpu["total"] - vcpu["reserved"]
    assert cell0.sriov == (
        models.SriovPool(site.lower(), f"{compute}_0000:3b:00.0", vfs_total=8, vfs_used=0),
    )
    assert cell1.hugepages == (models.HugePages(2048, total=512, free=512),)
    assert real.cpu_allocation_ratio == vcpu["allocation_ratio"]

    alone = by_name[f"{site}-nested"]
    assert [(c.id, c.cpus_total, c.memory_mb) for c in alone.cells] == [
        (0, 8, 4096),
        (1, 8, 4096),
    ]
    assert alone.cpu_allocation_ratio == 2.0
    assert alone.traits["disk_gb"] == "100"
