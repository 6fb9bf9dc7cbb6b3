"""The site agent's domain values, one dataclass per wire message it speaks.

Each class maps field for field onto its message in ``meridian/v1/agent.proto``
(``Inventory``, ``Host``, ``NumaCell``, ``HugePages``, ``SriovPool``, ``Usage``,
``DesiredObject``, ``ObjectStatus``), so the session converts without judgement; nothing
here imports the generated code. Values are frozen: a status or an inventory, once
made, is a fact about one moment.

Invariant 4 lives in ``DesiredObject.generation`` and ``ObjectStatus.observed_generation``:
the broker numbers every change of an object, and the agent says which number it has
converged to.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class HugePages:
    """One huge page pool of a NUMA cell, counted in pages."""

    page_size_kb: int
    total: int
    free: int


@dataclass(frozen=True, slots=True)
class SriovPool:
    """The virtual functions of one SR-IOV device, wired to one physical network."""

    physnet: str
    device: str
    vfs_total: int
    vfs_used: int = 0


@dataclass(frozen=True, slots=True)
class NumaCell:
    """One NUMA cell: CPUs (``pcpus_*`` are the dedicated ones), memory, pools."""

    id: int
    cpus_total: int
    pcpus_total: int
    memory_mb: int
    pcpus_used: int = 0
    vcpus_used: int = 0
    memory_used_mb: int = 0
    hugepages: tuple[HugePages, ...] = ()
    sriov: tuple[SriovPool, ...] = ()


@dataclass(frozen=True, slots=True)
class Host:
    """One compute host and its NUMA cells; ``traits`` are free-form labels."""

    name: str
    cells: tuple[NumaCell, ...]
    traits: Mapping[str, str] = field(default_factory=dict)
    cpu_allocation_ratio: float = 0.0
    """Shared vCPUs per non-dedicated CPU (Nova's ``cpu_allocation_ratio``, Placement's
    VCPU ``allocation_ratio``); 0 = not known here (the broker then assumes Nova's 4.0)."""


@dataclass(frozen=True, slots=True)
class Inventory:
    """Every host of the site, as collected at ``collected_unix_ms``."""

    hosts: tuple[Host, ...]
    collected_unix_ms: int = 0


@dataclass(frozen=True, slots=True)
class Usage:
    """Per project (Keystone project id), per resource class (``cores``, ...), an amount."""

    projects: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


class ObjectState(enum.Enum):
    PENDING = "PENDING"
    """Accepted by the cloud, not usable yet (a server still building)."""
    READY = "READY"
    FAILED = "FAILED"
    """See ``ObjectStatus.temporary``: whether the agent will retry on its own."""
    DELETED = "DELETED"


def object_key(kind: str, name: str) -> str:
    """The ``kind/name`` key objects go by on the wire (``Hello.observed``)."""
    return f"{kind}/{name}"


@dataclass(frozen=True, slots=True)
class DesiredObject:
    """What the broker wants to exist at this site (or not, when ``deleted``)."""

    kind: str
    name: str
    generation: int
    spec: Mapping[str, Any] = field(default_factory=dict)
    deleted: bool = False

    @property
    def key(self) -> str:
        return object_key(self.kind, self.name)


@dataclass(frozen=True, slots=True)
class ObjectStatus:
    """What the agent observed of one object at ``observed_generation``.

    ``temporary`` is meaningful for ``FAILED`` only: the agent retries on its own. A
    permanent failure waits for a new generation. ``outputs`` carries what the broker
    needs to know back, such as OpenStack ids.
    """

    kind: str
    name: str
    observed_generation: int
    state: ObjectState
    message: str = ""
    temporary: bool = False
    outputs: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return object_key(self.kind, self.name)
