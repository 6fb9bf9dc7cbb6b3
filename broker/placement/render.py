"""A placed VNF as each chosen site's desired objects, in the agents' spec vocabulary.

Per site: the VNF's images, networks (each with a subnet), one flavor per VDU (Nova extra specs:
``hw:cpu_policy``, ``hw:mem_page_size``, ``hw:numa_nodes``,
``hw:pci_numa_affinity_policy``), one server group per VDU, and per member its ports and
its server. The server carries the chosen host as ``hypervisor_hostname`` (Nova 2.74's
create-time host); drivers that cannot pin a host ignore it and their own scheduler
decides within the site.

A ``stitched`` virtual link gets no network or subnet here: the stitching controller
builds one global network named ``link_network(vnf, link)`` over the member sites (each
site's ``network_stitch`` makes the site's network of that name), and the ports below
attach to it by that name.

A VLAN link's segmentation id at each site comes from the broker's VLAN allocator
(``vlan_wants`` says what to ask it for: the descriptor's id, validated, or any free one).

Invariant: names derive from the VNF id only, so rendering the same plan twice gives the
same keys and values (``envelopes.FIRST``); deletion writes each object's
``Desired.tombstone``, so the agents' idempotent apply (invariant 4) does the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.models import objects as envelopes
from broker.models.vnf import Descriptor
from broker.placement.plan import Assignment
from broker.store import keys
from broker.store.protocol import Put

SERVER = "server"


@dataclass(frozen=True, slots=True)
class Desired:
    site: str
    kind: str
    name: str
    spec: dict[str, Any]

    @property
    def key(self) -> str:
        return keys.desired(self.site, self.kind, self.name)

    def put(self) -> Put:
        """The object's first generation (a placement is rendered once)."""
        return Put(self.key, envelopes.first(self.spec).encode())


def server_name(vnf_id: str, member: str) -> str:
    return f"{vnf_id}-{member}"


def port_name(vnf_id: str, member: str, point: str) -> str:
    return f"{vnf_id}-{member}-{point}"


def member_of(vnf_id: str, server: str) -> str | None:
    prefix = f"{vnf_id}-"
    return server[len(prefix) :] if server.startswith(prefix) else None


def link_network(vnf_id: str, link: str) -> str:
    """The network a link's ports attach to: per site, or the stitched network's id."""
    return f"{vnf_id}-{link}"


def stitched_ports(
    vnf_id: str, desc: Descriptor, members: Iterable[tuple[str, str, str]]
) -> dict[str, dict[str, tuple[str, ...]]]:
    """Per stitched link's network: per site, the ports of the members placed there.

    ``members`` are (member, VDU, site) triples; sites appear in the members' order.
    """
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    stitched = {v.name for v in desc.virtual_links if v.stitched}
    for member, vdu_name, site in members:
        for cp in desc.vdu(vdu_name).connection_points:
            if cp.virtual_link in stitched:
                at = out.setdefault(link_network(vnf_id, cp.virtual_link), {})
                at[site] = (*at.get(site, ()), port_name(vnf_id, member, cp.name))
    return out


def link_cidr(index: int) -> str:
    """The subnet of the descriptor's ``index``-th virtual link. Every link is a network
    of its own in the tenant's project, so the same range in every VNF never clashes."""
    return f"10.{64 + index // 256}.{index % 256}.0/24"


def vlan_key(link: str, site: str, physnet: str) -> str:
    """A VLAN link's segment at one site, as the VLAN allocator keys it."""
    return f"{link}@{site}/{physnet}"


def vlan_wants(desc: Descriptor, assignments: Iterable[Assignment]) -> dict[str, int | None]:
    """Every VLAN link's segment at each site it is placed at → the descriptor's
    ``segmentation_id`` (validated by the allocator) or None (allocated)."""
    out: dict[str, int | None] = {}
    for a in assignments:
        for cp in desc.vdu(a.member.vdu).connection_points:
            link = desc.link(cp.virtual_link)
            if link.network_type == "vlan" and link.physnet:
                out[vlan_key(link.name, a.site, link.physnet)] = link.segmentation_id
    return out


def objects(
    vnf_id: str,
    desc: Descriptor,
    assignments: Iterable[Assignment],
    vlans: Mapping[str, int] | None = None,
) -> list[Desired]:
    """Every desired object of the VNF, dependencies before dependents; ``vlans`` the
    allocated VLAN ids by ``vlan_key`` (else the descriptor's own, if any)."""
    by_site: dict[str, list[Assignment]] = {}
    for a in assignments:
        by_site.setdefault(a.site, []).append(a)
    out: list[Desired] = []
    for site, placed in sorted(by_site.items()):
        out += _site_objects(vnf_id, desc, site, placed, vlans or {})
    return out


def _site_objects(
    vnf_id: str, desc: Descriptor, site: str, placed: list[Assignment], vlans: Mapping[str, int]
) -> list[Desired]:
    project = desc.tenant
    vdus = [v for v in desc.vdus if any(a.member.vdu == v.name for a in placed)]
    images = {v.sw_image for v in vdus}
    links = {cp.virtual_link for v in vdus for cp in v.connection_points}
    out: list[Desired] = []
    for image in desc.sw_images:
        if image.name in images:
            spec = {
                "disk_format": image.disk_format,
                "container_format": image.container_format,
                "size": image.size,
                "sha256": image.checksum,
                "project": project,
            }
            out.append(Desired(site, "image", f"{vnf_id}-{image.name}", spec))
    for index, link in enumerate(desc.virtual_links):
        if link.name in links and not link.stitched:
            net: dict[str, Any] = {"project": project, "network_type": link.network_type}
            if link.physnet:
                net["physnet"] = link.physnet
            segment = vlans.get(vlan_key(link.name, site, link.physnet or ""))
            if segment or link.segmentation_id:
                net["segmentation_id"] = segment or link.segmentation_id
            out.append(Desired(site, "network", link_network(vnf_id, link.name), net))
            # Nova boots on a port only with a fixed IP: each link gets a subnet of its own
            subnet = {
                "project": project,
                "network": link_network(vnf_id, link.name),
                "cidr": link_cidr(index),
                "enable_dhcp": False,
            }
            out.append(Desired(site, "subnet", f"{vnf_id}-{link.name}", subnet))
    for vdu in vdus:
        vc = vdu.virtual_compute
        extra = {
            "hw:cpu_policy": vc.cpu_pinning,
            "hw:mem_page_size": "small" if vc.hugepage_size == "none" else vc.hugepage_size,
            "hw:numa_nodes": "1",
        }
        if any(cp.needs_vf for cp in vdu.connection_points):
            extra["hw:pci_numa_affinity_policy"] = vc.numa_affinity
        flavor = {
            "vcpus": vc.num_virtual_cpu,
            "ram_mb": vc.virtual_mem_size_mb,
            "disk_gb": vc.virtual_disk_gb,
            "extra_specs": extra,
        }
        policy = "anti-affinity" if vdu.scope == "host" else "soft-anti-affinity"
        out.append(Desired(site, "flavor", f"{vnf_id}-{vdu.name}", flavor))
        out.append(
            Desired(
                site, "server_group", f"{vnf_id}-{vdu.name}", {"project": project, "policy": policy}
            )
        )
    for a in placed:
        vdu = desc.vdu(a.member.vdu)
        ports = []
        for cp in vdu.connection_points:
            port = port_name(vnf_id, a.member.name, cp.name)
            ports.append(port)
            spec = {
                "project": project,
                "network": link_network(vnf_id, cp.virtual_link),
                "vnic_type": cp.vnic_type,
            }
            out.append(Desired(site, "port", port, spec))
        server = {
            "project": project,
            "flavor": f"{vnf_id}-{vdu.name}",
            "image": f"{vnf_id}-{vdu.sw_image}",
            "ports": ports,
            "server_group": f"{vnf_id}-{vdu.name}",
            "hypervisor_hostname": a.claim.host,
            "metadata": {
                "meridian:vnf": vnf_id,
                "meridian:member": a.member.name,
                "meridian:role": a.member.role,
            },
        }
        out.append(Desired(site, SERVER, server_name(vnf_id, a.member.name), server))
    return out
