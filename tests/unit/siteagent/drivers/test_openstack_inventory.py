"""OpenStack inventory from Placement provider trees, table by table: Nova's flat root,
NUMA-nested trees (a root without CPUs is a host, not skipped), huge pages and VF pools
nested under cells, allocation ratios, and trees that are not hosts at all."""

from __future__ import annotations

from typing import Any

import pytest

from siteagent import models
from siteagent.drivers.openstack import inventory
from siteagent.drivers.openstack.placement import Amount, Hypervisor, Provider, link, numa_cells


def rp(
    uuid: str,
    name: str,
    parent: str | None = None,
    traits: tuple[str, ...] = (),
    **amounts: Any,
) -> Provider:
    """A provider; ``VCPU=(total, used)`` or ``VCPU=Amount(...)``."""
    return Provider(
        uuid,
        name,
        parent,
        {
            rc: a if isinstance(a, Amount) else Amount(total=a[0], used=a[1])
            for rc, a in amounts.items()
        },
        frozenset(traits),
    )


def tree(*providers: Provider) -> Provider:
    (root,) = link(list(providers))
    return root


def test_nova_flat_root_is_one_cell_with_its_ratio_pages_and_child_vf_pool() -> None:
    host = inventory.host(
        tree(
            rp(
                "r",
                "cmp1",
                traits=("COMPUTE_STATUS_ENABLED",),
                VCPU=Amount(total=16, reserved=2, allocation_ratio=2.0, used=5),
                PCPU=(8, 3),
                MEMORY_MB=Amount(total=65536, reserved=1024, allocation_ratio=1.5, used=4096),
                DISK_GB=(500, 20),
                CUSTOM_HUGEPAGES_2M=(512, 12),
            ),
            rp(
                "v",
                "cmp1:NIC Switch agent:ens1",
                "r",
                ("CUSTOM_PHYSNET_SRIOV1",),
                SRIOV_NET_VF=(8, 2),
            ),
        ),
        Hypervisor("up", "enabled"),
    )
    assert host is not None
    assert host.cpu_allocation_ratio == 2.0
    assert host.cells == (
        models.NumaCell(
            id=0,
            cpus_total=14 + 8,
            pcpus_total=8,
            memory_mb=int(64512 * 1.5),
            pcpus_used=3,
            vcpus_used=5,
            memory_used_mb=4096,
            hugepages=(models.HugePages(2048, 512, 500),),
            sriov=(models.SriovPool("sriov1", "cmp1:NIC Switch agent:ens1", 8, 2),),
        ),
    )
    assert host.traits["COMPUTE_STATUS_ENABLED"] == "true"
    assert (host.traits["disk_gb"], host.traits["disk_gb_used"]) == ("500", "20")
    assert (host.traits["hypervisor_state"], host.traits["hypervisor_status"]) == ("up", "enabled")


def numa_tree() -> Provider:
    """A root with only disk; two NUMA providers holding the CPUs and memory, one with a
    2 MiB page provider, the other with a VF device; a VF device on the root itself."""
    return tree(
        rp("r", "edge1", DISK_GB=(100, 0)),
        rp(
            "n1",
            "edge1_NUMA1",
            "r",
            ("HW_NUMA_ROOT",),
            PCPU=(4, 4),
            VCPU=(2, 1),
            MEMORY_MB=(8192, 0),
        ),
        rp(
            "n0",
            "edge1_NUMA0",
            "r",
            ("HW_NUMA_ROOT",),
            PCPU=(4, 0),
            VCPU=(2, 0),
            MEMORY_MB=(8192, 512),
        ),
        rp("p1", "edge1_NUMA1_2M", "n1", ("CUSTOM_MEMORY_PAGE_SIZE_2048",), MEMORY_MB=(2048, 512)),
        rp("f0", "edge1_0000:3b:00.0", "n0", ("CUSTOM_PHYSNET_DATA",), SRIOV_NET_VF=(4, 1)),
        rp("f9", "edge1_0000:af:00.0", "r", ("CUSTOM_PHYSNET_MGMT",), SRIOV_NET_VF=(2, 0)),
    )


def test_numa_nested_host_is_not_skipped_and_has_one_cell_per_numa_provider() -> None:
    host = inventory.host(numa_tree(), Hypervisor("up", "enabled", numa_cells=2))
    assert host is not None and host.name == "edge1"
    assert [c.id for c in host.cells] == [0, 1]
    cell0, cell1 = host.cells
    assert (cell0.cpus_total, cell0.pcpus_total, cell0.pcpus_used, cell0.vcpus_used) == (6, 4, 0, 0)
    assert (cell0.memory_mb, cell0.memory_used_mb) == (8192, 512)
    # the VF device Placement did not nest under a cell counts in the lowest one
    assert cell0.sriov == (
        models.SriovPool("data", "edge1_0000:3b:00.0", 4, 1),
        models.SriovPool("mgmt", "edge1_0000:af:00.0", 2, 0),
    )
    assert (cell1.cpus_total, cell1.pcpus_total, cell1.pcpus_used, cell1.vcpus_used) == (6, 4, 4, 1)
    assert (cell1.memory_mb, cell1.memory_used_mb) == (8192, 0)
    assert cell1.hugepages == (models.HugePages(2048, 1024, 768),)
    assert cell1.sriov == ()
    # cells came from Placement: the hypervisor's own count is not needed
    assert "hypervisor_numa_cells" not in host.traits
    assert host.cpu_allocation_ratio == 1.0


def test_cells_without_numbered_names_are_numbered_in_name_order() -> None:
    host = inventory.host(
        tree(
            rp("r", "h"),
            rp("b", "h-socket-b", "r", ("HW_NUMA_ROOT",), PCPU=(2, 0)),
            rp("a", "h-socket-a", "r", ("HW_NUMA_ROOT",), PCPU=(1, 0)),
        )
    )
    assert host is not None
    assert [(c.id, c.pcpus_total) for c in host.cells] == [(0, 1), (1, 2)]


def test_trees_without_cpus_are_not_hosts() -> None:
    assert inventory.host(tree(rp("s", "shared-disk", DISK_GB=(1000, 0)))) is None
    assert inventory.host(tree(rp("n", "net-agent", NET_BW_EGR_KILOBIT_PER_SEC=(10, 0)))) is None


def test_fallback_reports_the_hypervisors_cell_count_without_inventing_cells() -> None:
    host = inventory.host(tree(rp("r", "h", VCPU=(8, 0))), Hypervisor("up", "enabled", 2))
    assert host is not None
    assert len(host.cells) == 1 and host.traits["hypervisor_numa_cells"] == "2"
    assert host.cpu_allocation_ratio == 1.0


def test_the_smallest_vcpu_ratio_of_a_tree_is_the_hosts() -> None:
    host = inventory.host(
        tree(
            rp("r", "h"),
            rp("a", "h_NUMA0", "r", ("HW_NUMA_ROOT",), VCPU=Amount(8, allocation_ratio=4.0)),
            rp("b", "h_NUMA1", "r", ("HW_NUMA_ROOT",), VCPU=Amount(8, allocation_ratio=3.0)),
        )
    )
    assert host is not None and host.cpu_allocation_ratio == 3.0


def test_pcpu_only_host_reports_no_ratio() -> None:
    host = inventory.host(tree(rp("r", "h", PCPU=(8, 0))))
    assert host is not None and host.cpu_allocation_ratio == 0.0


def test_link_makes_one_tree_per_root_whatever_the_listing_order() -> None:
    roots = link(
        [
            rp("c", "child", "b"),
            rp("b", "numa", "a"),
            rp("a", "root"),
            rp("x", "other"),
            rp("o", "orphan", "gone"),  # parent not listed: a root of its own
        ]
    )
    assert [r.name for r in roots] == ["orphan", "other", "root"]
    assert [p.name for p in roots[2].walk()] == ["root", "numa", "child"]


@pytest.mark.parametrize(
    ("cpu_info", "cells"),
    [
        ({"topology": {"cells": 2, "sockets": 2, "cores": 8, "threads": 2}}, 2),
        ('{"topology": {"cells": 1}}', 1),
        ("?", None),
        ({}, None),
        (None, None),
        ({"topology": {"cells": True}}, None),
        ({"topology": {"cells": 0}}, None),
    ],
)
def test_numa_cells_from_cpu_info(cpu_info: object, cells: int | None) -> None:
    assert numa_cells(cpu_info) == cells
