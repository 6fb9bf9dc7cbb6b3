"""VNF descriptors (what a carrier asks for) and VNF records (what the broker made of it).

A descriptor is versioned (``apiVersion: meridian.nfv/v1``, ``kind: VnfDescriptor``),
arrives as YAML or JSON, and borrows TOSCA-NFV's words where they fit: VDUs with a
``virtual_compute`` and ``connection_points`` on ``virtual_links``, ``sw_images``, and
anti-affinity rules whose ``targets`` are VDUs. ``parse`` validates it completely — the
schema, then the cross references — and raises ``InvalidInput`` naming the dotted field,
so nothing half-understood reaches placement. ``schema()`` is the JSON Schema.

Invariant: a ``Descriptor`` that ``parse`` returned expands (``members``) into concrete
members whose references all resolve inside the descriptor.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NewType

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from broker import errors
from broker.models import yamlbound

VnfId = NewType("VnfId", str)
API_VERSION = "meridian.nfv/v1"
KIND = "VnfDescriptor"
NAME = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
SCOPE = r"^(host|site|zone|region|failure_domain:[A-Za-z0-9_.-]+)$"
_SHA256 = re.compile(r"[0-9a-f]{64}")

Name = Annotated[str, Field(pattern=NAME)]
Text = Annotated[str, Field(max_length=255)]
Names = Annotated[list[Name], Field(max_length=64)]
Scope = Annotated[str, Field(pattern=SCOPE)]
LABEL_KEY = r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$"
Labels = Annotated[
    dict[Annotated[str, Field(pattern=LABEL_KEY)], Annotated[str, Field(max_length=63)]],
    Field(max_length=64),
]
"""A VNF's labels (``labels`` in the descriptor): what drills and operators select it by."""
"""Anti-affinity scope: host, site, zone, region, or a named failure domain label."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SwImage(_Model):
    """TOSCA-NFV ``SwImageData``: the image a VDU boots, verified by its sha256."""

    name: Name
    version: Text = ""
    disk_format: Literal["qcow2", "raw", "vmdk", "iso"] = "qcow2"
    container_format: Text = "bare"
    size: Annotated[int, Field(ge=0, le=2**50)] = 0
    checksum: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class VirtualLink(_Model):
    """A network the VNF's connection points attach to: an isolated network created at
    every chosen site, or (``stitched``) one global network over the member sites."""

    name: Name
    network_type: Literal["vxlan", "geneve", "vlan", "flat"] = "vxlan"
    physnet: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    segmentation_id: Annotated[int, Field(ge=1, le=4094)] | None = Field(
        default=None,
        description=(
            "A vlan link's VLAN id. Optional: when absent the broker allocates one per site"
            " and physnet from stitching.vlan_range; when given it must be inside that range"
            " and not held by another network at the site (else the VNF fails saying so)."
        ),
    )
    stitched: bool = Field(
        default=False,
        description=(
            "One l2-stretched stitched network over every site with a member on this link"
            " (global IPAM, a VNI, VXLAN tunnels between the sites' gateways) instead of an"
            " isolated copy per site. An overlay link: network_type vxlan, no physnet."
        ),
    )


class ConnectionPoint(_Model):
    name: Name
    virtual_link: Name
    vnic_type: Literal["normal", "direct", "direct-physical", "macvtap"] = "normal"
    data_path: Literal["sriov", "ovs-dpdk", "kernel"] | None = None
    """The data path the port needs from its host; None = any."""

    @property
    def needs_vf(self) -> bool:
        return self.vnic_type != "normal"


class VirtualCompute(_Model):
    """TOSCA-NFV ``VirtualCompute`` with the data-path knobs Nova's extra specs express."""

    num_virtual_cpu: Annotated[int, Field(ge=1, le=512)]
    virtual_mem_size_mb: Annotated[int, Field(ge=64, le=64 * 1024 * 1024)]
    virtual_disk_gb: Annotated[int, Field(ge=0, le=1024 * 1024)] = 0
    cpu_pinning: Literal["shared", "dedicated"] = "shared"
    hugepage_size: Literal["none", "2MB", "1GB"] = "none"
    numa_affinity: Literal["required", "preferred"] = "required"
    """required: cores, memory and VFs on one NUMA node; preferred: VFs may be remote."""

    @property
    def page_size_kb(self) -> int:
        return {"none": 0, "2MB": 2048, "1GB": 1048576}[self.hugepage_size]


class FailoverPolicy(_Model):
    """What the broker does when a member's site or host is lost (issue 10).

    ``promote``: auto — the best ready standby is made active as soon as the loss outlasts
    ``grace_s``; manual — it waits for ``meridian vnf failover``. ``restore``: auto — each
    lost member is re-placed on a surviving site (it joins as standby); manual — it waits
    for ``meridian vnf heal``. ``grace_s``: a member back within it is not failed over
    (0: act on the site's DOWN event, which site health already debounces).
    """

    promote: Literal["auto", "manual"] = "auto"
    restore: Literal["auto", "manual"] = "auto"
    grace_s: Annotated[float, Field(ge=0, le=3600)] = 0.0
    on_member_failure: Literal["degrade", "fail"] = "degrade"
    """While the VNF is first placed, a member that never became READY in
    ``vnf.max_attempts`` placements is given up: degrade — the VNF serves with the others
    (DEGRADED) when each VDU still has a READY member; fail — the whole VNF is FAILED and
    torn down."""


class Redundancy(_Model):
    """single; active-standby (2); n+k (n active, k standby); active-active on ≥ min_sites."""

    model: Literal["single", "active-standby", "n+k", "active-active"] = "single"
    n: Annotated[int, Field(ge=1, le=64)] = 1
    k: Annotated[int, Field(ge=0, le=64)] = 0
    min_sites: Annotated[int, Field(ge=1, le=64)] = 1
    failover: FailoverPolicy = FailoverPolicy()

    def roles(self) -> list[str]:
        if self.model == "active-standby":
            return ["active", "standby"]
        if self.model == "n+k":
            return ["active"] * self.n + ["standby"] * self.k
        if self.model == "active-active":
            return ["active"] * max(self.n, self.min_sites)
        return ["active"]


class Vdu(_Model):
    name: Name
    sw_image: Name
    virtual_compute: VirtualCompute
    connection_points: Annotated[list[ConnectionPoint], Field(max_length=32)] = []
    redundancy: Redundancy = Redundancy()
    anti_affinity: Scope | None = None
    """Members of this VDU never share this scope (default: host; site when min_sites>1)."""

    @property
    def scope(self) -> str:
        if self.anti_affinity is not None:
            return self.anti_affinity
        return "site" if self.redundancy.min_sites > 1 else "host"


class AntiAffinityRule(_Model):
    """TOSCA-NFV ``AntiAffinityRule``: members of all ``targets`` never share ``scope``."""

    targets: Annotated[list[Name], Field(min_length=1, max_length=64)]
    scope: Scope


class LocationBound(_Model):
    location: Annotated[str, Field(min_length=1, max_length=128)]
    max_ms: Annotated[float, Field(gt=0)]
    targets: Names = []
    """VDUs bound (all when empty)."""


class Latency(_Model):
    to_locations: Annotated[list[LocationBound], Field(max_length=64)] = []
    between_members_max_ms: Annotated[float, Field(gt=0)] | None = None


class Weights(_Model):
    utilization: Annotated[float, Field(ge=0)] = 1.0
    cost: Annotated[float, Field(ge=0)] = 0.0
    latency: Annotated[float, Field(ge=0)] = 0.0


class Preferences(_Model):
    strategy: Literal["pack", "spread"] = "spread"
    weights: Weights = Weights()


class Descriptor(_Model):
    api_version: Literal["meridian.nfv/v1"] = Field(alias="apiVersion")
    kind: Literal["VnfDescriptor"]
    name: Name
    tenant: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: Annotated[str, Field(max_length=4096)] = ""
    labels: Labels = {}
    sw_images: Annotated[list[SwImage], Field(max_length=64)] = []
    virtual_links: Annotated[list[VirtualLink], Field(max_length=64)] = []
    vdus: Annotated[list[Vdu], Field(min_length=1, max_length=16)]
    anti_affinity: Annotated[list[AntiAffinityRule], Field(max_length=64)] = []
    latency: Latency = Latency()
    selectors: Annotated[
        dict[Annotated[str, Field(max_length=63)], Text], Field(max_length=64)
    ] = {}
    preferences: Preferences = Preferences()
    priority: Annotated[int, Field(ge=0, le=1000)] = 0
    """Recovery order after a site loss: higher first (then the oldest loss)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    def vdu(self, name: str) -> Vdu:
        return next(v for v in self.vdus if v.name == name)

    def link(self, name: str) -> VirtualLink:
        return next(v for v in self.virtual_links if v.name == name)


@dataclass(frozen=True, slots=True)
class Need:
    """What one member asks of one host: everything on one NUMA cell unless relaxed."""

    vcpus: int
    dedicated: bool
    memory_mb: int
    page_size_kb: int = 0
    vfs: tuple[tuple[str, int], ...] = ()
    """(physnet, VFs), sorted."""
    vfs_local: bool = True
    """VFs must sit on the NUMA cell of the cores."""
    data_paths: tuple[str, ...] = ()
    """The data paths (``sriov``, ``ovs-dpdk``, ``kernel``) its ports ask of the host."""

    def describe(self) -> str:
        cpus = f"{self.vcpus} {'pinned cores' if self.dedicated else 'vCPUs'}"
        pages = f" in {self.page_size_kb // 1024} MiB pages" if self.page_size_kb else ""
        vfs = "".join(f", {n} VFs on {net}" for net, n in self.vfs)
        where = "one NUMA node" if self.vfs_local or not self.vfs else "one host"
        paths = f", data path {'+'.join(self.data_paths)}" if self.data_paths else ""
        return f"{cpus}, {self.memory_mb} MiB{pages}{vfs}{paths} on {where}"


@dataclass(frozen=True, slots=True)
class Member:
    """One instance to place: ``<vdu>-<index>``."""

    name: str
    vdu: str
    role: str
    index: int
    need: Need


def need_of(desc: Descriptor, vdu: Vdu) -> Need:
    vfs: dict[str, int] = {}
    for cp in vdu.connection_points:
        if cp.needs_vf:
            physnet = desc.link(cp.virtual_link).physnet or ""
            vfs[physnet] = vfs.get(physnet, 0) + 1
    vc = vdu.virtual_compute
    return Need(
        vcpus=vc.num_virtual_cpu,
        dedicated=vc.cpu_pinning == "dedicated",
        memory_mb=vc.virtual_mem_size_mb,
        page_size_kb=vc.page_size_kb,
        vfs=tuple(sorted(vfs.items())),
        vfs_local=vc.numa_affinity == "required",
        data_paths=tuple(sorted({cp.data_path for cp in vdu.connection_points if cp.data_path})),
    )


def members(desc: Descriptor) -> list[Member]:
    out = []
    for vdu in desc.vdus:
        need = need_of(desc, vdu)
        for i, role in enumerate(vdu.redundancy.roles()):
            out.append(Member(f"{vdu.name}-{i}", vdu.name, role, i, need))
    return out


def deltas(desc: Descriptor) -> dict[str, int]:
    """What the whole VNF charges to its tenant's quota, by resource class."""
    total: dict[str, int] = {}
    for per_member in member_deltas(desc).values():
        for rc, n in per_member.items():
            total[rc] = total.get(rc, 0) + n
    return total


def member_deltas(desc: Descriptor) -> dict[str, dict[str, int]]:
    """What each member (by name) charges to its tenant's quota, by resource class.

    The sum over members is ``deltas``; the quota ledger books it per site from these.
    """
    out: dict[str, dict[str, int]] = {}
    for m in members(desc):
        vdu = desc.vdu(m.vdu)
        amounts = {
            "instances": 1,
            "cores": m.need.vcpus,
            "ram_mb": m.need.memory_mb,
            "gigabytes": vdu.virtual_compute.virtual_disk_gb,
            "ports": len(vdu.connection_points),
            "pinned_cores": m.need.vcpus if m.need.dedicated else 0,
            "hugepages_mb": m.need.memory_mb if m.need.page_size_kb else 0,
            "sriov_vfs": sum(n for _, n in m.need.vfs),
        }
        out[m.name] = {rc: n for rc, n in amounts.items() if n}
    return out


# -- parsing ---------------------------------------------------------------------------


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "descriptor"


def load_text(text: str | bytes) -> dict[str, Any]:
    """YAML or JSON text as a mapping (JSON is YAML; both go through the bounded loader)."""
    data = yamlbound.load(text, "descriptor")
    if not isinstance(data, dict):
        raise errors.InvalidInput("descriptor", "must be a mapping (apiVersion, kind, ...)")
    return data


def parse(data: dict[str, Any] | str | bytes) -> Descriptor:
    """Validate a descriptor; ``InvalidInput`` names the first wrong field."""
    raw = load_text(data) if isinstance(data, str | bytes) else data
    try:
        desc = Descriptor.model_validate(raw)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise errors.InvalidInput(_dotted(tuple(first["loc"])), first["msg"]) from exc
    _check_references(desc)
    return desc


def _unique(items: list[str], where: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(items):
        if name in seen:
            raise errors.InvalidInput(f"{where}[{i}].name", f"{name!r} is declared twice")
        seen.add(name)


def _check_references(desc: Descriptor) -> None:
    _unique([v.name for v in desc.vdus], "vdus")
    _unique([v.name for v in desc.virtual_links], "virtual_links")
    _unique([s.name for s in desc.sw_images], "sw_images")
    links = {v.name: v for v in desc.virtual_links}
    vdus = {v.name for v in desc.vdus}
    for i, link in enumerate(desc.virtual_links):
        if link.network_type in ("vlan", "flat") and not link.physnet:
            raise errors.InvalidInput(
                f"virtual_links[{i}].physnet", f"is required for a {link.network_type} link"
            )
        if link.network_type not in ("vlan", "flat") and link.physnet:
            raise errors.InvalidInput(
                f"virtual_links[{i}].physnet", f"must not be set on a {link.network_type} link"
            )
        if link.stitched and link.network_type != "vxlan":
            raise errors.InvalidInput(
                f"virtual_links[{i}].stitched",
                f"a stitched link is a VXLAN overlay between sites, not {link.network_type}",
            )
    for i, vdu in enumerate(desc.vdus):
        _unique([c.name for c in vdu.connection_points], f"vdus[{i}].connection_points")
        for j, cp in enumerate(vdu.connection_points):
            where = f"vdus[{i}].connection_points[{j}]"
            found = links.get(cp.virtual_link)
            if found is None:
                raise errors.InvalidInput(
                    f"{where}.virtual_link", f"unknown virtual link {cp.virtual_link!r}"
                )
            if cp.needs_vf and not found.physnet:
                raise errors.InvalidInput(
                    f"{where}.vnic_type",
                    f"{cp.vnic_type} needs a VF: link {found.name!r} has no physnet",
                )
            if (cp.data_path == "sriov") != cp.needs_vf and cp.data_path is not None:
                raise errors.InvalidInput(
                    f"{where}.data_path",
                    f"data_path {cp.data_path} does not go with vnic_type {cp.vnic_type}"
                    " (sriov needs direct, direct-physical or macvtap; the others need normal)",
                )
        red = vdu.redundancy
        if red.model == "n+k" and red.k < 1:
            raise errors.InvalidInput(f"vdus[{i}].redundancy.k", "n+k needs k ≥ 1")
        if red.min_sites > len(red.roles()):
            raise errors.InvalidInput(
                f"vdus[{i}].redundancy.min_sites",
                f"{red.min_sites} sites need at least as many members, not {len(red.roles())}",
            )
    for i, rule in enumerate(desc.anti_affinity):
        for j, target in enumerate(rule.targets):
            if target not in vdus:
                raise errors.InvalidInput(f"anti_affinity[{i}].targets[{j}]", f"no VDU {target!r}")
    for i, bound in enumerate(desc.latency.to_locations):
        for j, target in enumerate(bound.targets):
            if target not in vdus:
                raise errors.InvalidInput(
                    f"latency.to_locations[{i}].targets[{j}]", f"no VDU {target!r}"
                )


def schema() -> dict[str, Any]:
    """The descriptor's JSON Schema (``apiVersion`` meridian.nfv/v1)."""
    out: dict[str, Any] = Descriptor.model_json_schema(by_alias=True)
    out["$id"] = f"urn:meridian:schema:{API_VERSION}:{KIND}"
    return out


def to_json(desc: Descriptor) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(desc.model_dump_json(by_alias=True))
    return out


# -- records ---------------------------------------------------------------------------


class VnfState(enum.StrEnum):
    PENDING = "PENDING"  # accepted, not placed yet
    PLACED = "PLACED"  # claims committed, desired objects written
    ACTIVE = "ACTIVE"  # every member's server READY
    DEGRADED = "DEGRADED"  # serving, redundancy reduced (a member lost, not yet restored)
    FAILING_OVER = "FAILING_OVER"  # a standby's promotion written, not yet reported applied
    HEALING = "HEALING"  # lost members being re-placed
    FAILED = "FAILED"  # no feasible plan, or a member failed; ``reason`` says why
    DELETING = "DELETING"


@dataclass(frozen=True, slots=True)
class MemberStatus:
    name: str
    vdu: str
    role: str
    site: str
    host: str
    numa_cell: int
    state: str = "PENDING"
    message: str = ""
    observed_host: str = ""
    placed_ms: int = 0
    """When this placement of the member was committed (its READY deadline runs from it)."""
    attempts: int = 1
    """Placements of this member so far (``vnf.max_attempts`` at most)."""
    avoid_hosts: tuple[str, ...] = ()
    avoid_sites: tuple[str, ...] = ()
    """Where earlier placements of the member failed: its re-placement keeps away."""
    given_up: bool = False
    generation: int = 1
    """The desired generation of the member's server in this placement: a status of an
    older one (a failure before a move on the same site) is not this placement's."""
    """Never READY after ``vnf.max_attempts`` placements (or nowhere left): not re-placed."""


@dataclass(frozen=True, slots=True)
class VnfRecord:
    """``vnfs/<id>``: the descriptor, what is wanted, and where it stands."""

    id: str
    tenant: str
    descriptor: dict[str, Any]
    state: VnfState = VnfState.PENDING
    reason: str = ""
    deleted: bool = False
    created_ms: int = 0
    updated_ms: int = 0
    members: tuple[MemberStatus, ...] = ()
    reservation: str = ""
    attempts: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    scope: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    """(regions, sites) its creator may act at — placement stays inside; None: anywhere."""
