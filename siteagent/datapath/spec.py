"""What a site gateway is asked to hold: its underlay endpoint and one spec per network.

A network's spec may also name the VNF ports attached at this site: on a simulated site
each becomes a namespace of its own (a stand-in VM) on the site bridge.

These are plain frozen values, built by the reconciler from the broker's desired objects
(``gateway_endpoint``, ``network_stitch``) or by a test; the gateway converges the
kernel to them and nothing else. Device names are derived here, in one place.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

VXLAN_PORT = 4789
L2 = "l2-stretched"
L3 = "l3-routed"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The site gateway's underlay: the interface tunnels leave by, and its address."""

    namespace: str
    """The gateway's network namespace (created if missing)."""
    device: str
    """The underlay interface; moved into the namespace if it is outside."""
    address: str
    """Its address with prefix length (``192.0.2.10/24``): the tunnels' local end."""
    mtu: int = 1500
    gateway: str = ""
    """Underlay next hop for peers beyond the device's own subnet ("" = on-link only)."""

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]


@dataclass(frozen=True, slots=True)
class Link:
    """One VXLAN device: it listens on ``port`` and floods to every peer address."""

    port: int
    peers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Route:
    destination: str  # CIDR
    via: str


@dataclass(frozen=True, slots=True)
class Port:
    """A VNF port attached at this site, with its fixed address (with prefix)."""

    name: str
    address: str


@dataclass(frozen=True, slots=True)
class Segment:
    """This site's subnet of the network: what the site's cloud network is given."""

    subnet: str
    gateway: str
    pool: tuple[str, str]


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """One stitched network at this site."""

    network: str
    kind: str  # L2 or L3
    vni: int
    mtu: int
    address: str
    """The gateway's own address on the site segment, with prefix (probed by peers)."""
    links: tuple[Link, ...]
    extra_addresses: tuple[str, ...] = ()
    """More addresses on the site segment (the l2 network's gateway at its home site)."""
    transit: str = ""
    """l3-routed: the gateway's address on the transit segment the tunnels carry."""
    routes: tuple[Route, ...] = field(default_factory=tuple)
    """l3-routed: the other sites' subnets, each via its gateway's transit address."""
    project: str = ""
    """The tenant's project: the site's own network and subnet are made in it ("" = none)."""
    segment: Segment | None = None
    ports: tuple[Port, ...] = ()
    """The VNF ports attached at this site (a stitched virtual link's members)."""

    @property
    def bridge(self) -> str:
        """The site segment's bridge: VMs' ports go here."""
        return bridge_name(self.vni)

    @property
    def tunnel_bridge(self) -> str:
        """Where the VXLAN devices hang: the site bridge (l2), the transit bridge (l3)."""
        return self.bridge if self.kind == L2 else f"tb-{self.vni}"

    def vxlan(self, index: int) -> str:
        return f"vx-{self.vni}" if index == 0 else f"vx-{self.vni}-{index}"


def member_prefix(gateway_namespace: str, vni: int) -> str:
    """Every member namespace of network ``vni`` starts with this."""
    return f"{gateway_namespace}-m{vni}-"


def member_names(gateway_namespace: str, vni: int, port: str) -> tuple[str, str, str]:
    """A sim member's namespace, its interface there, and its port on the site bridge."""
    digest = hashlib.sha256(port.encode()).hexdigest()[:8]
    return f"{member_prefix(gateway_namespace, vni)}{digest}", f"mv{digest}", f"mp{digest}"


def bridge_name(vni: int) -> str:
    return f"br-{vni}"


def vni_of(ifname: str) -> int | None:
    """The VNI a gateway device name carries (br-N, tb-N, vx-N, vx-N-k), else None."""
    head, _, rest = ifname.partition("-")
    if head not in ("br", "tb", "vx"):
        return None
    number = rest.split("-")[0]
    return int(number) if number.isdigit() else None


def from_json(doc: dict[str, object]) -> NetworkSpec:
    """A ``network_stitch`` desired object's spec, as the broker renders it."""
    raw_links, raw_routes = _list(doc, "links"), _list(doc, "routes")
    return NetworkSpec(
        network=str(doc["network"]),
        kind=str(doc["kind"]),
        vni=int(str(doc["vni"])),
        mtu=int(str(doc["mtu"])),
        address=str(doc["address"]),
        links=tuple(Link(int(x["port"]), tuple(str(p) for p in x["peers"])) for x in raw_links),
        extra_addresses=tuple(str(a) for a in _list(doc, "extra_addresses")),
        transit=str(doc.get("transit", "")),
        routes=tuple(Route(str(r["destination"]), str(r["via"])) for r in raw_routes),
        project=str(doc.get("project", "")),
        segment=_segment(doc.get("segment")),
        ports=tuple(Port(str(p["name"]), str(p["address"])) for p in _list(doc, "ports")),
    )


def _segment(raw: object) -> Segment | None:
    if not isinstance(raw, dict):
        return None
    pool = [str(a) for a in raw["allocation_pool"]]
    return Segment(str(raw["subnet"]), str(raw["gateway"]), (pool[0], pool[1]))


def _list(doc: dict[str, object], key: str) -> list[Any]:
    """``doc[key]`` when it is a list (absent: empty); ``TypeError`` otherwise."""
    found = doc.get(key) or []
    if not isinstance(found, list):
        raise TypeError(f"{key} is not a list")
    return found
