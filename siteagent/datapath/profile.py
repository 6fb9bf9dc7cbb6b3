"""A site's data-path profile: what the accelerated data path of the agent's host should be.

The profile is the spec of the desired object of kind ``datapath`` (name ``host``; its
generation versions it like every desired object), or a local file for sites managed
locally. It declares:

- huge pages per NUMA node and page size (a page count);
- SR-IOV: VF count per physical function (PF), the PF's physical network, VF trust and
  spoof-check;
- Open vSwitch: ``other_config`` of the switch (``dpdk-init``, ``dpdk-socket-mem``,
  ``pmd-cpu-mask``, ...) and bridges with their ``datapath_type`` (``netdev`` = userspace,
  the OVS-DPDK datapath; ``system`` = kernel), ports (``internal``, ``patch`` with a peer,
  ``vhost-user`` with a socket path, ``system`` for an existing device) and OpenFlow flows;
- CPU roles: pinned and shared CPU sets per NUMA node (checked against the kernel's
  isolated CPUs and reported, never changed at runtime);
- ``policy``: whether drift found later is ``correct``ed or only ``report``ed.

``parse`` is the one way in. It checks everything that needs no host (types, names,
duplicates, formats) and raises ``InvalidSpec`` with the dotted path of the first problem;
what needs the host (PFs, memory, CPUs, foreign bridges) is ``check.py``'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import pydantic

from siteagent import errors
from siteagent.hardware import cpulist

KIND = "datapath"
NAME = "host"
"""The one datapath object of a site: the profile of the agent's host."""

Policy = Literal["correct", "report"]
PortType = Literal["internal", "patch", "vhost-user", "system"]
# Linux interface names: at most 15 bytes, no slash or whitespace (internal ports and
# netdev bridges become tap devices, so the kernel's rule holds for all of them)
_IFNAME = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
_SOCKET_MEM = re.compile(r"\d+(,\d+)*")
_MASK = re.compile(r"(0x)?[0-9a-fA-F]+")
PMD_MASK = "pmd-cpu-mask"
SOCKET_MEM = "dpdk-socket-mem"


@dataclass(frozen=True, slots=True)
class HugePageRequest:
    node: Annotated[int, pydantic.Field(ge=0)]
    page_size_kb: Annotated[int, pydantic.Field(gt=0)]
    count: Annotated[int, pydantic.Field(ge=0)]


@dataclass(frozen=True, slots=True)
class VfRequest:
    pf: str
    vfs: Annotated[int, pydantic.Field(ge=0)]
    physnet: str = ""
    """The physical network the PF's VFs are offered on; empty = not offered."""
    trust: bool = False
    spoof_check: bool = True


@dataclass(frozen=True, slots=True)
class OvsPort:
    name: str
    type: PortType = "internal"
    peer: str = ""
    """The other end of a ``patch`` port."""
    path: str = ""
    """The socket of a ``vhost-user`` port (OVS is the client, QEMU the server)."""


@dataclass(frozen=True, slots=True)
class OvsBridge:
    name: str
    datapath_type: Literal["netdev", "system"] = "netdev"
    ports: tuple[OvsPort, ...] = ()
    flows: tuple[str, ...] = ()
    """OpenFlow flows in ``ovs-ofctl`` syntax; none = the default ``NORMAL`` switching."""


@dataclass(frozen=True, slots=True)
class OvsConfig:
    other_config: dict[str, str] = field(default_factory=dict)
    bridges: tuple[OvsBridge, ...] = ()


@dataclass(frozen=True, slots=True)
class CpuRole:
    node: Annotated[int, pydantic.Field(ge=0)]
    pinned: str = ""
    """cpulist of the CPUs instances are pinned to (should be isolated)."""
    shared: str = ""
    """cpulist of the CPUs shared by floating instances and the host."""


@dataclass(frozen=True, slots=True)
class Profile:
    policy: Policy = "correct"
    hugepages: tuple[HugePageRequest, ...] = ()
    sriov: tuple[VfRequest, ...] = ()
    ovs: OvsConfig = field(default_factory=OvsConfig)
    cpu: tuple[CpuRole, ...] = ()

    def bridge_names(self) -> set[str]:
        return {b.name for b in self.ovs.bridges}

    def port_names(self) -> set[str]:
        return {p.name for b in self.ovs.bridges for p in b.ports}

    def pmd_cpus(self) -> frozenset[int] | None:
        """The CPUs of ``pmd-cpu-mask``, or None when the profile sets no mask."""
        mask = self.ovs.other_config.get(PMD_MASK)
        return None if mask is None else mask_cpus(mask)


_ADAPTER = pydantic.TypeAdapter(Profile)


def parse(spec: Mapping[str, Any], *, name: str = NAME) -> Profile:
    """The profile ``spec`` declares; ``InvalidSpec`` names the first thing wrong."""
    try:
        profile = _ADAPTER.validate_python(dict(spec), extra="forbid", strict=False)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(spec)"
        raise errors.InvalidSpec(where, first["msg"], kind=KIND, name=name) from None
    for where, problem in _problems(profile):
        raise errors.InvalidSpec(where, problem, kind=KIND, name=name)
    return profile


def to_spec(profile: Profile) -> dict[str, Any]:
    """The JSON-able spec of ``profile`` (``parse(to_spec(p)) == p``)."""
    dumped: dict[str, Any] = _ADAPTER.dump_python(profile, mode="json")
    return dumped


def mask_cpus(mask: str) -> frozenset[int]:
    """The CPUs a hexadecimal CPU mask (``0x6`` or ``6``) names."""
    value = int(mask, 16)
    return frozenset(bit for bit in range(value.bit_length()) if value >> bit & 1)


def _problems(profile: Profile) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    problems += _duplicates(
        "hugepages", [(h.node, h.page_size_kb) for h in profile.hugepages], "node and page size"
    )
    problems += _duplicates("sriov", [v.pf for v in profile.sriov], "pf")
    problems += _duplicates("cpu", [c.node for c in profile.cpu], "node")
    for i, vf in enumerate(profile.sriov):
        if not _IFNAME.fullmatch(vf.pf):
            problems.append((f"sriov.{i}.pf", f"{vf.pf!r} is not an interface name"))
    problems += _ovs_problems(profile.ovs)
    for i, role in enumerate(profile.cpu):
        for part in ("pinned", "shared"):
            try:
                cpulist.parse(getattr(role, part))
            except ValueError as exc:
                problems.append((f"cpu.{i}.{part}", str(exc)))
        if not problems and cpulist.parse(role.pinned) & cpulist.parse(role.shared):
            problems.append((f"cpu.{i}", "a CPU cannot be both pinned and shared"))
    return problems


def _ovs_problems(ovs: OvsConfig) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    mask = ovs.other_config.get(PMD_MASK)
    if mask is not None and (not _MASK.fullmatch(mask) or not mask_cpus(mask)):
        problems.append((f"ovs.other_config.{PMD_MASK}", f"{mask!r} is not a non-zero hex mask"))
    mem = ovs.other_config.get(SOCKET_MEM)
    if mem is not None and not _SOCKET_MEM.fullmatch(mem):
        problems.append(
            (f"ovs.other_config.{SOCKET_MEM}", f"{mem!r} is not MB per node, e.g. '1024,1024'")
        )
    problems += _duplicates("ovs.bridges", [b.name for b in ovs.bridges], "name")
    ports = [
        (f"ovs.bridges.{i}.ports.{j}", p)
        for i, b in enumerate(ovs.bridges)
        for j, p in enumerate(b.ports)
    ]
    seen = {b.name for b in ovs.bridges}
    for i, bridge in enumerate(ovs.bridges):
        if not _IFNAME.fullmatch(bridge.name):
            problems.append((f"ovs.bridges.{i}.name", f"{bridge.name!r} is not an interface name"))
        for j, flow in enumerate(bridge.flows):
            if not flow.strip() or "\n" in flow:
                problems.append((f"ovs.bridges.{i}.flows.{j}", "a flow is one non-empty line"))
    for where, port in ports:
        if not _IFNAME.fullmatch(port.name):
            problems.append((f"{where}.name", f"{port.name!r} is not an interface name"))
        elif port.name in seen:
            problems.append((f"{where}.name", f"{port.name!r} is used twice (ports, bridges)"))
        seen.add(port.name)
        if port.type == "patch" and not port.peer:
            problems.append((f"{where}.peer", "a patch port needs its peer"))
        if port.type == "vhost-user" and not port.path.startswith("/"):
            problems.append((f"{where}.path", "a vhost-user port needs an absolute socket path"))
    return problems


def _duplicates(where: str, values: list[Any], what: str) -> list[tuple[str, str]]:
    seen: set[Any] = set()
    for i, value in enumerate(values):
        if value in seen:
            return [(f"{where}.{i}", f"{what} {value!r} appears twice")]
        seen.add(value)
    return []
