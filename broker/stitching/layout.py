"""How a stitched network's block is laid out over its member sites (pure).

``l2-stretched``: one subnet over every site, one gateway address (the network's first
host, served by the first site's gateway), and the rest cut into one disjoint chunk per
site: the chunk's first address is that site's gateway-namespace address (what ``verify``
probes), the remainder its allocation pool and DHCP range.

``l3-routed``: the block is cut into equal subnets, one per site plus a transit subnet (the
last) that joins the site gateways over the tunnel; each site subnet's first host is the
site gateway's routed interface.

Invariant: per-site ranges never overlap each other or the gateway address; a block too
small for its sites is refused (``InvalidInput``), never laid out half.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from broker import errors

L2 = "l2-stretched"
L3 = "l3-routed"
KINDS = (L2, L3)
VXLAN_OVERHEAD = 50
"""Bytes a VXLAN-over-IPv4 encapsulation adds (outer IPv4 20 + UDP 8 + VXLAN 8 + inner
Ethernet 14): the inner MTU is the underlay's minus this."""


@dataclass(frozen=True, slots=True)
class SiteSegment:
    """What one site's gateway and Neutron subnet get from the network's block."""

    site: str
    subnet: str  # CIDR the site's VMs live in
    gateway: str  # the subnet's gateway (router) address
    address: str  # the site gateway namespace's own address on the network (probed)
    pool: tuple[str, str]  # allocation pool: first, last
    dhcp: tuple[str, str]  # DHCP range: first, last (disjoint across sites)
    transit: str = ""  # l3-routed: the gateway's address on the transit subnet (CIDR form)

    def as_json(self) -> dict[str, object]:
        return {
            "site": self.site,
            "subnet": self.subnet,
            "gateway": self.gateway,
            "address": self.address,
            "allocation_pool": list(self.pool),
            "dhcp_range": list(self.dhcp),
            "transit": self.transit,
        }

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> SiteSegment:
        pool = [str(x) for x in doc["allocation_pool"]]  # type: ignore[attr-defined]
        dhcp = [str(x) for x in doc["dhcp_range"]]  # type: ignore[attr-defined]
        return cls(
            site=str(doc["site"]),
            subnet=str(doc["subnet"]),
            gateway=str(doc["gateway"]),
            address=str(doc["address"]),
            pool=(pool[0], pool[1]),
            dhcp=(dhcp[0], dhcp[1]),
            transit=str(doc.get("transit", "")),
        )


def lay_out(kind: str, cidr: str, sites: Sequence[str]) -> list[SiteSegment]:
    """The per-site segments of a network of ``kind`` over ``sites`` in block ``cidr``."""
    net = ipaddress.IPv4Network(cidr)
    if not sites:
        raise errors.InvalidInput("sites", "a network needs at least one site")
    if kind == L2:
        return _l2(net, sites)
    if kind == L3:
        return _l3(net, sites)
    raise errors.InvalidInput("type", f"{kind!r} is not one of {', '.join(KINDS)}")


def _addr(n: int) -> str:
    return str(ipaddress.IPv4Address(n))


def _l2(net: ipaddress.IPv4Network, sites: Sequence[str]) -> list[SiteSegment]:
    first = int(net.network_address) + 1  # the gateway
    last = int(net.broadcast_address) - 1
    hosts = last - first  # addresses after the gateway
    per = hosts // len(sites)
    if per < 2:
        raise errors.InvalidInput(
            "cidr", f"{net} is too small for {len(sites)} sites (each needs 2 addresses)"
        )
    out = []
    for i, site in enumerate(sites):
        lo = first + 1 + i * per
        hi = lo + per - 1
        out.append(_segment(site, net, first, lo, (lo + 1, hi)))
    return out


def _l3(net: ipaddress.IPv4Network, sites: Sequence[str]) -> list[SiteSegment]:
    extra_bits = len(sites).bit_length()  # 2**extra_bits > len(sites): room for transit
    prefix = net.prefixlen + extra_bits
    if prefix > 29:
        raise errors.InvalidInput(
            "cidr",
            f"{net} is too small for {len(sites)} routed sites "
            f"(each needs a /29 or larger; ask for /{29 - extra_bits} or larger)",
        )
    parts = list(net.subnets(new_prefix=prefix))
    transit = parts[-1]
    out = []
    for i, site in enumerate(sites):
        sub = parts[i]
        gw = int(sub.network_address) + 1
        hosts = (gw + 1, int(sub.broadcast_address) - 1)
        seg = _segment(site, sub, gw, gw, hosts)
        via = f"{_addr(int(transit.network_address) + 1 + i)}/{transit.prefixlen}"
        out.append(dataclasses.replace(seg, transit=via))
    return out


def _segment(
    site: str, net: ipaddress.IPv4Network, gateway: int, own: int, pool: tuple[int, int]
) -> SiteSegment:
    """A segment whose pool is also its DHCP range (Neutron serves DHCP from the pool)."""
    first, last = _addr(pool[0]), _addr(pool[1])
    return SiteSegment(
        site=site,
        subnet=str(net),
        gateway=_addr(gateway),
        address=f"{_addr(own)}/{net.prefixlen}",
        pool=(first, last),
        dhcp=(first, last),
    )


def inner_mtu(underlay_mtus: Sequence[int], asked: int | None) -> int:
    """The network's MTU: what every member's tunnel carries; ``InvalidInput`` if not."""
    if not underlay_mtus:
        raise errors.InvalidInput("sites", "no member site has a gateway endpoint")
    most = min(underlay_mtus) - VXLAN_OVERHEAD
    if asked is None:
        return most
    if asked <= VXLAN_OVERHEAD or asked < 68:
        raise errors.InvalidInput(
            "mtu",
            f"{asked} is below the VXLAN tunnel overhead ({VXLAN_OVERHEAD} bytes) plus the "
            f"IPv4 minimum (68); at most {most} fits the member sites' underlay",
        )
    if asked > most:
        raise errors.InvalidInput(
            "mtu",
            f"{asked} does not fit: the smallest member underlay MTU is {min(underlay_mtus)}, "
            f"minus {VXLAN_OVERHEAD} bytes of VXLAN leaves at most {most}",
        )
    return asked


def peers(sites: Sequence[str], max_mesh: int) -> dict[str, list[str]]:
    """Who tunnels to whom: a full mesh up to ``max_mesh`` sites, hub-and-spoke beyond.

    The hub is the first site; every spoke tunnels only to it, and it to every spoke.
    """
    if len(sites) <= max_mesh:
        return {s: [p for p in sites if p != s] for s in sites}
    hub = sites[0]
    out = {hub: [s for s in sites if s != hub]}
    out.update({s: [hub] for s in sites[1:]})
    return out
