"""Placement's resource provider trees and Nova's hypervisors, read as plain values.

``trees`` lists every provider with its inventories (each with its allocation ratio),
usages and traits, and links them into trees by ``parent_provider_uuid``: one tree per
root provider (a compute node with its nested NUMA, PCI/VF and bandwidth providers, or a
sharing provider on its own). ``hypervisors`` reads Nova's hypervisor list at a
microversion that still carries ``cpu_info`` (the only place the API shows anything of a
host's NUMA topology: the number of cells). Both block; the driver runs them in a thread.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from typing import Any

from openstack import exceptions as os_exc

PLACEMENT_VERSION = "1.14"
"""Nested providers: ``parent_provider_uuid`` and ``root_provider_uuid`` (1.14)."""
HYPERVISORS_VERSION = "2.87"
"""The last compute microversion whose hypervisor details carry ``cpu_info``."""


@dataclasses.dataclass(frozen=True, slots=True)
class Amount:
    """One resource class of one provider, as Placement counts it."""

    total: int
    reserved: int = 0
    allocation_ratio: float = 1.0
    used: int = 0

    @property
    def usable(self) -> int:
        """What instances may have at a ratio of 1: the total less the host's reserve."""
        return self.total - self.reserved

    @property
    def capacity(self) -> int:
        """What Placement lets instances claim: ``(total - reserved) * allocation_ratio``."""
        return int(self.usable * self.allocation_ratio)


@dataclasses.dataclass(slots=True)
class Provider:
    uuid: str
    name: str
    parent: str | None
    amounts: dict[str, Amount] = dataclasses.field(default_factory=dict)
    traits: frozenset[str] = frozenset()
    children: list[Provider] = dataclasses.field(default_factory=list)

    def walk(self) -> Iterator[Provider]:
        """This provider and every provider nested below it, parents first."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclasses.dataclass(frozen=True, slots=True)
class Hypervisor:
    state: str
    status: str
    numa_cells: int | None = None
    """Cells in ``cpu_info.topology`` (the libvirt driver reports them); None: not shown."""


def _get(conn: Any, service: str, path: str, microversion: str) -> Any:
    response = getattr(conn, service).get(path, microversion=microversion)
    os_exc.raise_from_response(response)
    return response.json()


def amounts(
    inventories: Mapping[str, Mapping[str, Any]], usages: Mapping[str, int]
) -> dict[str, Amount]:
    """Placement's inventories and usages of one provider, by resource class."""
    return {
        rc: Amount(
            total=int(item.get("total", 0)),
            reserved=int(item.get("reserved", 0)),
            allocation_ratio=float(item.get("allocation_ratio", 1.0)),
            used=int(usages.get(rc, 0)),
        )
        for rc, item in inventories.items()
    }


def link(providers: list[Provider]) -> list[Provider]:
    """The roots of ``providers``, each with its nested providers as children (by name)."""
    by_uuid = {p.uuid: p for p in providers}
    roots = []
    for p in sorted(providers, key=lambda p: p.name):
        parent = by_uuid.get(p.parent or "")
        if parent is None or parent is p:
            roots.append(p)
        else:
            parent.children.append(p)
    return roots


def trees(conn: Any) -> list[Provider]:
    """Every provider tree of the site's Placement, roots sorted by name."""
    providers = []
    for rp in _get(conn, "placement", "/resource_providers", PLACEMENT_VERSION)[
        "resource_providers"
    ]:
        base = f"/resource_providers/{rp['uuid']}"
        inventories = _get(conn, "placement", f"{base}/inventories", PLACEMENT_VERSION)
        usages = _get(conn, "placement", f"{base}/usages", PLACEMENT_VERSION)
        traits = _get(conn, "placement", f"{base}/traits", PLACEMENT_VERSION)
        providers.append(
            Provider(
                uuid=rp["uuid"],
                name=rp["name"],
                parent=rp.get("parent_provider_uuid"),
                amounts=amounts(inventories["inventories"], usages["usages"]),
                traits=frozenset(traits["traits"]),
            )
        )
    return link(providers)


def hypervisors(conn: Any) -> dict[str, Hypervisor]:
    """Nova's hypervisors by host name: state, status and NUMA cells where shown."""
    body = _get(conn, "compute", "/os-hypervisors/detail", HYPERVISORS_VERSION)
    out = {}
    for h in body.get("hypervisors", []):
        name = h.get("hypervisor_hostname")
        if name:
            out[name] = Hypervisor(
                str(h.get("state")), str(h.get("status")), numa_cells(h.get("cpu_info"))
            )
    return out


def numa_cells(cpu_info: object) -> int | None:
    """``topology.cells`` of a hypervisor's ``cpu_info`` (an object, or JSON text before
    2.28); None when it is not there (the fake and most non-libvirt drivers)."""
    if isinstance(cpu_info, str):
        try:
            cpu_info = json.loads(cpu_info)
        except ValueError:
            return None
    topology = cpu_info.get("topology") if isinstance(cpu_info, dict) else None
    cells = topology.get("cells") if isinstance(topology, dict) else None
    return cells if isinstance(cells, int) and not isinstance(cells, bool) and cells > 0 else None
