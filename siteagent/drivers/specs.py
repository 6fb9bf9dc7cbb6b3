"""The spec of each object kind: validated once here, used by every driver.

The broker sends specs as JSON objects; ``parse`` turns one into a typed, frozen value
or raises ``errors.InvalidSpec`` naming the field and what is wrong. Unknown fields are
ignored, so a broker one minor version ahead does not break an older agent. References
to other objects are by Meridian name (``flavor: "vnf-small"``); drivers resolve them.

Flavor extra specs follow Nova's names (``hw:cpu_policy``, ``hw:mem_page_size``,
``hw:numa_nodes``); drivers pass unknown ones through to the cloud.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from siteagent import errors

SMALL_PAGES: Final = "small"
PageSize = int | Literal["small", "large", "any"]
"""Nova's ``hw:mem_page_size``: a page size in KiB, or small, large, any."""


@dataclass(frozen=True, slots=True)
class FlavorSpec:
    vcpus: int
    ram_mb: int
    disk_gb: int = 0
    extra_specs: Mapping[str, str] = field(default_factory=dict)

    @property
    def dedicated(self) -> bool:
        """Whether every vCPU is pinned to its own host pCPU."""
        return self.extra_specs.get("hw:cpu_policy", "shared") == "dedicated"

    @property
    def page_size(self) -> PageSize:
        return parse_page_size(self.extra_specs.get("hw:mem_page_size", SMALL_PAGES))


@dataclass(frozen=True, slots=True)
class ServerGroupSpec:
    project: str
    policy: str


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    project: str
    network_type: str = "vxlan"
    physnet: str | None = None
    segmentation_id: int | None = None
    shared: bool = False
    mtu: int | None = None
    """The network's MTU (a stitched network's inner MTU); None: the cloud's default."""


@dataclass(frozen=True, slots=True)
class SubnetSpec:
    project: str
    network: str
    cidr: str
    gateway_ip: str | None = None
    enable_dhcp: bool = True


@dataclass(frozen=True, slots=True)
class Subport:
    """A Meridian port carried on a trunk, tagged with its segmentation (a VLAN id)."""

    port: str
    segmentation_id: int
    segmentation_type: str = "vlan"


@dataclass(frozen=True, slots=True)
class TrunkSpec:
    """The trunk whose parent is the port: Neutron's ``trunk`` extension."""

    subports: tuple[Subport, ...] = ()


@dataclass(frozen=True, slots=True)
class PortSpec:
    project: str
    network: str
    vnic_type: str = "normal"
    security_groups: tuple[str, ...] = ()
    trunk: TrunkSpec | None = None
    """None: no trunk; a ``TrunkSpec`` (even without subports): the port is a trunk parent."""

    @property
    def needs_vf(self) -> bool:
        return self.vnic_type in ("direct", "direct-physical", "macvtap")


@dataclass(frozen=True, slots=True)
class ServerSpec:
    project: str
    flavor: str
    image: str
    ports: tuple[str, ...] = ()
    server_group: str | None = None
    keypair: str | None = None
    host: str | None = None
    """The compute host the broker planned (``hypervisor_hostname``); None: the cloud picks."""
    role: str | None = None
    """The member's role (``metadata["meridian:role"]``: active or standby), applied and
    reported back as the ``role`` output."""


@dataclass(frozen=True, slots=True)
class KeypairSpec:
    public_key: str
    project: str = ""


@dataclass(frozen=True, slots=True)
class Rule:
    direction: str
    protocol: str
    port_min: int | None = None
    port_max: int | None = None
    remote_ip_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class SecurityGroupSpec:
    project: str
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True, slots=True)
class ImageSpec:
    disk_format: str
    size: int
    sha256: str
    container_format: str = "bare"
    project: str = ""


@dataclass(frozen=True, slots=True)
class QuotaSpec:
    """Limits per resource class for one project; -1 means unlimited."""

    project: str
    limits: Mapping[str, int] = field(default_factory=dict)


Spec = (
    FlavorSpec
    | ServerGroupSpec
    | NetworkSpec
    | SubnetSpec
    | PortSpec
    | ServerSpec
    | KeypairSpec
    | SecurityGroupSpec
    | ImageSpec
    | QuotaSpec
)

SERVER_GROUP_POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")
NETWORK_TYPES = ("flat", "vlan", "vxlan", "geneve")
VNIC_TYPES = ("normal", "direct", "direct-physical", "macvtap")
SEGMENTATION_TYPES = ("vlan",)
DISK_FORMATS = ("qcow2", "raw", "vmdk", "vhd", "vhdx", "vdi", "iso", "ami")
_SIZE_UNITS = {"KB": 1, "MB": 1024, "GB": 1024 * 1024}
_PAGE_SIZE = re.compile(r"(\d+)\s*(KB|MB|GB)?", re.IGNORECASE)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def parse_page_size(text: str) -> PageSize:
    """Nova's ``hw:mem_page_size``: "small", "large", "any", "2MB", "1GB", "2048" (KiB)."""
    lowered = text.strip().lower()
    if lowered in ("small", "large", "any"):
        return lowered  # type: ignore[return-value]
    match = _PAGE_SIZE.fullmatch(text.strip())
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not small, large, any or a size like 2MB or 1GB")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "KB").upper()]


class _Reader:
    """Reads typed fields out of one spec, raising ``InvalidSpec`` that names them."""

    def __init__(self, kind: str, name: str, spec: Mapping[str, Any]) -> None:
        self.kind, self.name, self.spec = kind, name, spec

    def fail(self, field_name: str, problem: str) -> errors.InvalidSpec:
        return errors.InvalidSpec(field_name, problem, kind=self.kind, name=self.name)

    def text(self, key: str, *, default: str | None = None, choices: tuple[str, ...] = ()) -> str:
        value = self.spec.get(key, default)
        if value is None:
            raise self.fail(key, "is required")
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, not {value!r}")
        if choices and value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def optional_text(self, key: str) -> str | None:
        return None if self.spec.get(key) is None else self.text(key)

    def integer(self, key: str, *, minimum: int, default: int | None = None) -> int:
        value = self.spec.get(key, default)
        if value is None:
            raise self.fail(key, "is required")
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.fail(key, f"must be an integer ≥ {minimum}, not {value!r}")
        return value

    def optional_integer(self, key: str, *, minimum: int) -> int | None:
        return None if self.spec.get(key) is None else self.integer(key, minimum=minimum)

    def flag(self, key: str, *, default: bool) -> bool:
        value = self.spec.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, not {value!r}")
        return value

    def names(self, key: str) -> tuple[str, ...]:
        value = self.spec.get(key, [])
        if not isinstance(value, list | tuple):
            raise self.fail(key, f"must be a list of names, not {value!r}")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.fail(f"{key}[{index}]", f"must be a non-empty string, not {item!r}")
        if len(set(value)) != len(value):
            raise self.fail(key, "names an object twice")
        return tuple(value)

    def mapping(self, key: str) -> Mapping[str, Any]:
        value = self.spec.get(key, {})
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise self.fail(key, f"must be an object, not {value!r}")
        return value


def parse(kind: str, name: str, spec: Mapping[str, Any]) -> Spec:
    """The typed spec of an object of ``kind``; raises ``InvalidSpec`` naming the field."""
    parser = _PARSERS.get(kind)
    if parser is None:
        raise errors.InvalidSpec("kind", f"unknown kind {kind!r}", kind=kind, name=name)
    if not isinstance(spec, Mapping):
        raise errors.InvalidSpec("", "must be a JSON object", kind=kind, name=name)
    return parser(_Reader(kind, name, spec))


def _flavor(r: _Reader) -> FlavorSpec:
    extra = r.mapping("extra_specs")
    for key, value in extra.items():
        if not isinstance(value, str):
            raise r.fail(f"extra_specs.{key}", f"must be a string, not {value!r}")
    policy = extra.get("hw:cpu_policy", "shared")
    if policy not in ("shared", "dedicated"):
        raise r.fail("extra_specs.hw:cpu_policy", f"must be shared or dedicated, not {policy!r}")
    try:
        parse_page_size(extra.get("hw:mem_page_size", SMALL_PAGES))
    except ValueError as exc:
        raise r.fail("extra_specs.hw:mem_page_size", str(exc)) from None
    numa_nodes = extra.get("hw:numa_nodes", "1")
    if numa_nodes != "1":
        raise r.fail("extra_specs.hw:numa_nodes", f"only 1 is supported, not {numa_nodes!r}")
    return FlavorSpec(
        vcpus=r.integer("vcpus", minimum=1),
        ram_mb=r.integer("ram_mb", minimum=1),
        disk_gb=r.integer("disk_gb", minimum=0, default=0),
        extra_specs=dict(extra),
    )


def _server_group(r: _Reader) -> ServerGroupSpec:
    return ServerGroupSpec(
        project=r.text("project"), policy=r.text("policy", choices=SERVER_GROUP_POLICIES)
    )


def _network(r: _Reader) -> NetworkSpec:
    network_type = r.text("network_type", default="vxlan", choices=NETWORK_TYPES)
    physnet = r.optional_text("physnet")
    if network_type in ("flat", "vlan") and physnet is None:
        raise r.fail("physnet", f"is required for a {network_type} network")
    if network_type not in ("flat", "vlan") and physnet is not None:
        raise r.fail("physnet", f"must not be set for a {network_type} network")
    segment = r.optional_integer("segmentation_id", minimum=1)
    if network_type == "vlan" and segment is not None and segment > 4094:
        raise r.fail("segmentation_id", f"must be a VLAN id 1-4094, not {segment}")
    return NetworkSpec(
        project=r.text("project"),
        network_type=network_type,
        physnet=physnet,
        segmentation_id=segment,
        shared=r.flag("shared", default=False),
        mtu=r.optional_integer("mtu", minimum=68),
    )


def _subnet(r: _Reader) -> SubnetSpec:
    cidr = r.text("cidr")
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise r.fail("cidr", str(exc)) from None
    gateway = r.optional_text("gateway_ip")
    if gateway is not None:
        try:
            inside = ipaddress.ip_address(gateway) in network
        except ValueError as exc:
            raise r.fail("gateway_ip", str(exc)) from None
        if not inside:
            raise r.fail("gateway_ip", f"{gateway} is not inside {cidr}")
    return SubnetSpec(
        project=r.text("project"),
        network=r.text("network"),
        cidr=str(network),
        gateway_ip=gateway,
        enable_dhcp=r.flag("enable_dhcp", default=True),
    )


def _port(r: _Reader) -> PortSpec:
    return PortSpec(
        project=r.text("project"),
        network=r.text("network"),
        vnic_type=r.text("vnic_type", default="normal", choices=VNIC_TYPES),
        security_groups=r.names("security_groups"),
        trunk=_trunk(r),
    )


def _trunk(r: _Reader) -> TrunkSpec | None:
    """``trunk: {subports: [{port, segmentation_type, segmentation_id}]}``, or absent."""
    raw = r.spec.get("trunk")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise r.fail("trunk", f"must be an object with subports, not {raw!r}")
    items = raw.get("subports", [])
    if not isinstance(items, list):
        raise r.fail("trunk.subports", f"must be a list of subports, not {items!r}")
    subports: list[Subport] = []
    for index, item in enumerate(items):
        where = f"trunk.subports[{index}]"
        if not isinstance(item, Mapping):
            raise r.fail(where, "must be an object")
        sub = _Reader(r.kind, r.name, item)
        try:
            subport = Subport(
                port=sub.text("port"),
                segmentation_type=sub.text(
                    "segmentation_type", default="vlan", choices=SEGMENTATION_TYPES
                ),
                segmentation_id=sub.integer("segmentation_id", minimum=1),
            )
        except errors.InvalidSpec as exc:
            raise r.fail(f"{where}.{exc.field}", exc.problem) from None
        if subport.segmentation_id > 4094:
            raise r.fail(
                f"{where}.segmentation_id",
                f"must be a VLAN id 1-4094, not {subport.segmentation_id}",
            )
        if subport.port == r.name:
            raise r.fail(f"{where}.port", "a trunk cannot carry its own parent port")
        if any(s.port == subport.port for s in subports):
            raise r.fail(f"{where}.port", f"port {subport.port!r} is on the trunk twice")
        if any(s.segmentation_id == subport.segmentation_id for s in subports):
            raise r.fail(
                f"{where}.segmentation_id", f"VLAN {subport.segmentation_id} is used twice"
            )
        subports.append(subport)
    return TrunkSpec(subports=tuple(subports))


def _server(r: _Reader) -> ServerSpec:
    return ServerSpec(
        project=r.text("project"),
        flavor=r.text("flavor"),
        image=r.text("image"),
        ports=r.names("ports"),
        server_group=r.optional_text("server_group"),
        keypair=r.optional_text("keypair"),
        host=r.optional_text("hypervisor_hostname"),
        role=_role(r),
    )


ROLE_KEY = "meridian:role"
ROLES = ("active", "standby")


def _role(r: _Reader) -> str | None:
    role = r.mapping("metadata").get(ROLE_KEY)
    if role is None:
        return None
    if role not in ROLES:
        raise r.fail(f"metadata.{ROLE_KEY}", f"must be one of {', '.join(ROLES)}, not {role!r}")
    return str(role)


def _keypair(r: _Reader) -> KeypairSpec:
    key = r.text("public_key")
    if not key.startswith(("ssh-", "ecdsa-", "sk-")):
        raise r.fail("public_key", "must be an OpenSSH public key (ssh-ed25519 AAAA...)")
    return KeypairSpec(public_key=key, project=r.text("project", default="-"))


def _security_group(r: _Reader) -> SecurityGroupSpec:
    raw = r.spec.get("rules", [])
    if not isinstance(raw, list):
        raise r.fail("rules", f"must be a list of rules, not {raw!r}")
    rules = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise r.fail(f"rules[{index}]", "must be an object")
        rule = _Reader(r.kind, r.name, item)
        try:
            port_min = rule.optional_integer("port_min", minimum=1)
            port_max = rule.optional_integer("port_max", minimum=port_min or 1)
            rules.append(
                Rule(
                    direction=rule.text("direction", choices=("ingress", "egress")),
                    protocol=rule.text(
                        "protocol", default="any", choices=("any", "tcp", "udp", "icmp", "sctp")
                    ),
                    port_min=port_min,
                    port_max=port_max,
                    remote_ip_prefix=rule.optional_text("remote_ip_prefix"),
                )
            )
        except errors.InvalidSpec as exc:
            raise r.fail(f"rules[{index}].{exc.field}", exc.problem) from None
    return SecurityGroupSpec(project=r.text("project"), rules=tuple(rules))


def _image(r: _Reader) -> ImageSpec:
    digest = r.text("sha256").lower()
    if _SHA256.fullmatch(digest) is None:
        raise r.fail("sha256", "must be 64 hexadecimal digits")
    return ImageSpec(
        disk_format=r.text("disk_format", choices=DISK_FORMATS),
        size=r.integer("size", minimum=0),
        sha256=digest,
        container_format=r.text("container_format", default="bare"),
        project=r.text("project", default="-"),
    )


def _quota(r: _Reader) -> QuotaSpec:
    limits = r.mapping("limits")
    for key, value in limits.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < -1:
            raise r.fail(f"limits.{key}", f"must be an integer ≥ -1 (-1: unlimited), not {value!r}")
    return QuotaSpec(project=r.text("project"), limits=dict(limits))


_PARSERS: dict[str, Callable[[_Reader], Spec]] = {
    "flavor": _flavor,
    "server_group": _server_group,
    "network": _network,
    "subnet": _subnet,
    "port": _port,
    "server": _server,
    "keypair": _keypair,
    "security_group": _security_group,
    "image": _image,
    "quota": _quota,
}
