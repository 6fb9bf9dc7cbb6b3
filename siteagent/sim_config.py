"""What a simulated site looks like: its hosts, NUMA cells and pools, from YAML or made up.

``load_yaml``/``from_dict`` validate a description and report every problem with its
dotted path (``hosts.0.cells.1.pcpus: ...``) in one ``SettingsError``; ``generated``
makes a realistic site from a seed without any file, deterministically and cheaply, so a
test or a benchmark can run a thousand sites in one process. The description holds
capacity only; the ``sim`` driver keeps the claims.

A YAML description::

    site: edge-7
    cpu_allocation_ratio: 4.0      # shared vCPUs per non-dedicated CPU
    hosts:
      - name: edge-7-cmp-001
        traits: {CUSTOM_DPDK: "true"}
        cells:
          - id: 0
            cpus: 32               # logical CPUs of the cell
            pcpus: 24              # of which dedicated (pinnable)
            memory_mb: 65536       # small-page memory, huge page pools excluded
            hugepages: {2048: 1024, 1048576: 32}   # page size in KiB: pages
            sriov: [{physnet: physnet1, device: ens1f0, vfs: 16}]
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import pydantic
import yaml

from siteagent import errors

_STRICT = pydantic.ConfigDict(extra="forbid")


@dataclass(frozen=True, slots=True)
class SimVfPool:
    __pydantic_config__ = _STRICT
    physnet: str
    device: str
    vfs: Annotated[int, pydantic.Field(ge=0)]


@dataclass(frozen=True, slots=True)
class SimCell:
    __pydantic_config__ = _STRICT
    id: Annotated[int, pydantic.Field(ge=0)]
    cpus: Annotated[int, pydantic.Field(ge=1)]
    memory_mb: Annotated[int, pydantic.Field(ge=0)]
    pcpus: Annotated[int, pydantic.Field(ge=0)] = 0
    hugepages: Mapping[int, int] = field(default_factory=dict)
    """Page size in KiB → number of pages."""
    sriov: tuple[SimVfPool, ...] = ()


@dataclass(frozen=True, slots=True)
class SimHost:
    __pydantic_config__ = _STRICT
    name: str
    cells: tuple[SimCell, ...]
    traits: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SimSiteConfig:
    __pydantic_config__ = _STRICT
    site: str
    hosts: tuple[SimHost, ...]
    cpu_allocation_ratio: Annotated[float, pydantic.Field(gt=0)] = 4.0
    """Shared vCPUs that fit on one non-dedicated CPU (Nova's cpu_allocation_ratio)."""
    build_polls: Annotated[int, pydantic.Field(ge=0)] = 0
    """``observe`` calls a new or resized server stays PENDING before it is READY."""
    latency_s: Annotated[float, pydantic.Field(ge=0)] = 0.0
    """Simulated time every driver call takes."""


_ADAPTER = pydantic.TypeAdapter(SimSiteConfig)


def load_yaml(text: str, *, source: str = "sim config") -> SimSiteConfig:
    """A site description from YAML text; ``source`` names it in error messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise errors.SettingsError([f"{source}: not valid YAML: {exc}"]) from exc
    if not isinstance(data, Mapping):
        raise errors.SettingsError([f"{source}: must be a mapping with site and hosts"])
    return from_dict(data)


def from_dict(data: Mapping[str, Any]) -> SimSiteConfig:
    """A validated site description; every problem is reported by its dotted path."""
    try:
        config = _ADAPTER.validate_python(data)
    except pydantic.ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise errors.SettingsError(problems) from exc
    problems = _problems(config)
    if problems:
        raise errors.SettingsError(problems)
    return config


def _problems(config: SimSiteConfig) -> list[str]:
    problems = []
    if not config.site:
        problems.append("site: must not be empty")
    if not config.hosts:
        problems.append("hosts: a site needs at least one host")
    seen_hosts: set[str] = set()
    for h, host in enumerate(config.hosts):
        if not host.name or host.name in seen_hosts:
            problems.append(f"hosts.{h}.name: {host.name!r} is empty or not unique")
        seen_hosts.add(host.name)
        if not host.cells:
            problems.append(f"hosts.{h}.cells: a host needs at least one cell")
        seen_cells: set[int] = set()
        for c, cell in enumerate(host.cells):
            where = f"hosts.{h}.cells.{c}"
            if cell.id in seen_cells:
                problems.append(f"{where}.id: cell {cell.id} appears twice")
            seen_cells.add(cell.id)
            if cell.pcpus > cell.cpus:
                problems.append(f"{where}.pcpus: {cell.pcpus} dedicated of {cell.cpus} CPUs")
            for size, pages in cell.hugepages.items():
                if size < 4 or pages < 0:
                    problems.append(f"{where}.hugepages.{size}: {pages} pages of {size} KiB")
    return problems


_PROFILES = (
    # (cpus per cell, dedicated per cell, small-page MiB, 2M pages, 1G pages, VFs per NIC)
    (24, 20, 32768, 2048, 32, 16),
    (32, 28, 65536, 4096, 64, 32),
    (48, 40, 98304, 4096, 96, 64),
    (64, 56, 131072, 8192, 160, 64),
)


def generated(site_id: str, *, hosts: int = 4, cells: int = 2, seed: int = 0) -> SimSiteConfig:
    """A realistic NFV site: the same arguments always give the same site.

    Hosts share one of a few hardware profiles; every cell has 2 MiB and 1 GiB pages and
    an SR-IOV NIC, alternating ``physnet1``/``physnet2`` across cells.
    """
    if hosts < 1 or cells < 1:
        raise errors.SettingsError([f"generated site {site_id!r}: hosts and cells must be ≥ 1"])
    rng = random.Random(f"{site_id}/{seed}")
    made = []
    for h in range(hosts):
        cpus, pcpus, memory, small, large, vfs = rng.choice(_PROFILES)
        name = f"{site_id}-cmp-{h + 1:03d}"
        made.append(
            SimHost(
                name=name,
                cells=tuple(
                    SimCell(
                        id=c,
                        cpus=cpus,
                        pcpus=pcpus,
                        memory_mb=memory,
                        hugepages={2048: small, 1048576: large},
                        sriov=(SimVfPool(f"physnet{c % 2 + 1}", f"ens{c + 1}f0", vfs),),
                    )
                    for c in range(cells)
                ),
                traits={"CUSTOM_NFV": "true", "rack": f"r{h // 8 + 1:02d}"},
            )
        )
    return SimSiteConfig(site=site_id, hosts=tuple(made))
