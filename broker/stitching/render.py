"""A stitched network's per-site desired object (``network_stitch``), from its allocation.

Each member site gets what its gateway needs and nothing of the other sites' internals:
its segment (subnet, gateway, pool, DHCP range, its own address), the VNI and inner MTU,
and its tunnels — one ``link`` per VXLAN device, each a UDP port and the underlay
addresses of the peers it floods to (a full mesh up to ``max_mesh`` sites, hub-and-spoke
beyond: each spoke gets its own port at the hub) — plus, for ``l3-routed``, the transit
address and a route to every other site's subnet; the tenant's project, and the VNF ports
attached at the site (a stitched virtual link's members), each with a fixed address from
the site's pool; the route target and distinguisher (a site whose cloud interconnects
with BGPVPN uses them; a site without a gateway address is no tunnel peer).

Invariant: every member is rendered from the same allocation and endpoint snapshot, so
the tunnels are symmetric: if A floods to B on a port, B floods to A on that port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from broker import errors
from broker.stitching import layout

VXLAN_PORT = 4789


@dataclass(frozen=True, slots=True)
class GatewayEndpoint:
    """What a site's agent reported about its gateway: underlay address and MTU."""

    site: str
    address: str
    mtu: int


def links(
    sites: Sequence[str], endpoints: Mapping[str, GatewayEndpoint], max_mesh: int
) -> dict[str, list[dict[str, object]]]:
    """Per site: its VXLAN devices as ``{"port", "peers"}``."""
    if len(sites) <= max_mesh:
        return {
            s: [
                {
                    "port": VXLAN_PORT,
                    "peers": [
                        endpoints[p].address for p in sites if p != s and endpoints[p].address
                    ],
                }
            ]
            for s in sites
        }
    hub, spokes = sites[0], sites[1:]
    out: dict[str, list[dict[str, object]]] = {
        hub: [
            {"port": VXLAN_PORT + k, "peers": [endpoints[s].address]}
            for k, s in enumerate(spokes, 1)
        ]
    }
    for k, s in enumerate(spokes, 1):
        out[s] = [{"port": VXLAN_PORT + k, "peers": [endpoints[hub].address]}]
    return out


def stitch_objects(
    network: str,
    kind: str,
    cidr: str,
    vni: int,
    mtu: int,
    sites: Sequence[str],
    endpoints: Mapping[str, GatewayEndpoint],
    max_mesh: int,
    *,
    project: str = "",
    ports: Mapping[str, Sequence[str]] | None = None,
    route_target: str = "",
) -> dict[str, dict[str, object]]:
    """The ``network_stitch`` spec of every member site; ``ports``: per site, the VNF ports
    attached there (each gets the next address of the site's pool)."""
    segments = layout.lay_out(kind, cidr, sites)
    tunnels = links(sites, endpoints, max_mesh)
    hub = sites[0] if len(sites) > max_mesh else ""
    by_site = {seg.site: seg for seg in segments}
    out = {}
    for seg in segments:
        spec: dict[str, object] = {
            "network": network,
            "kind": kind,
            "vni": vni,
            "mtu": mtu,
            "address": seg.address,
            "extra_addresses": [],
            "transit": seg.transit,
            "links": tunnels[seg.site],
            "routes": [],
            "segment": seg.as_json(),
            "project": project,
            "route_target": route_target,
            "route_distinguisher": route_target,
            "ports": _ports(seg, (ports or {}).get(seg.site, ())),
        }
        plen = ipaddress.IPv4Network(seg.subnet).prefixlen
        if kind == layout.L2 and seg.site == sites[0]:
            spec["extra_addresses"] = [f"{seg.gateway}/{plen}"]
        if kind == layout.L3:
            spec["routes"] = _routes(seg.site, by_site, hub)
        out[seg.site] = spec
    return out


def _routes(site: str, by_site: Mapping[str, layout.SiteSegment], hub: str) -> list[dict[str, str]]:
    """To every other site's subnet: via its transit address, or via the hub's (a spoke)."""
    out = []
    for other, seg in by_site.items():
        if other == site:
            continue
        via_site = other if not hub or site == hub else hub
        via = by_site[via_site].transit.split("/")[0]
        out.append({"destination": seg.subnet, "via": via})
    return out


def _ports(seg: layout.SiteSegment, names: Sequence[str]) -> list[dict[str, str]]:
    """Each port with the next address of the site's pool; ``InvalidInput`` past its end."""
    first, last = (int(ipaddress.IPv4Address(a)) for a in seg.pool)
    plen = ipaddress.IPv4Network(seg.subnet).prefixlen
    if len(names) > last - first + 1:
        raise errors.InvalidInput(
            "ports",
            f"{len(names)} ports do not fit site {seg.site}'s pool {seg.pool[0]}-{seg.pool[1]}",
        )
    return [
        {"name": n, "address": f"{ipaddress.IPv4Address(first + i)}/{plen}"}
        for i, n in enumerate(names)
    ]
