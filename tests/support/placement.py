"""Building placement worlds for tests and the benchmark: sites, inventories, latency.

Everything goes through the same encoding the broker stores in etcd, so a snapshot built
here (``world``) is the snapshot ``Snapshot.load`` would build from those keys, and
``seed_store`` writes them to a real store.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from broker.models import codec
from broker.models import vnf as vnf_model
from broker.models.inventory import Host, HugePages, Inventory, NumaCell, SriovPool
from broker.models.site import Health, SiteHealth, SiteSpec
from broker.placement.snapshot import Snapshot
from broker.store import keys
from broker.store.protocol import Store

SAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "vnf"


@dataclass(frozen=True, slots=True)
class CellShape:
    cpus: int = 32
    pcpus: int = 28
    memory_mb: int = 65536
    pages_2m: int = 4096
    pages_1g: int = 32
    vfs: dict[str, int] = field(default_factory=lambda: {"physnet1": 32})
    pcpus_used: int = 0


def cell(i: int, shape: CellShape) -> NumaCell:
    return NumaCell(
        id=i,
        cpus_total=shape.cpus,
        pcpus_total=shape.pcpus,
        memory_mb=shape.memory_mb,
        pcpus_used=shape.pcpus_used,
        hugepages=(
            HugePages(2048, shape.pages_2m, shape.pages_2m),
            HugePages(1048576, shape.pages_1g, shape.pages_1g),
        ),
        sriov=tuple(
            SriovPool(net, f"ens{i}f{j}", n) for j, (net, n) in enumerate(shape.vfs.items())
        ),
    )


def inventory(
    site: str,
    hosts: int = 4,
    shapes: Sequence[CellShape] = (CellShape(),) * 2,
    per_host: Sequence[Sequence[CellShape]] = (),
) -> Inventory:
    """``hosts`` hosts with the cells ``shapes``, or one host per entry of ``per_host``."""
    layout = list(per_host) or [shapes] * hosts
    return Inventory(
        site=site,
        collected_ms=1,
        hosts=tuple(
            Host(f"{site}-cmp-{h:03d}", tuple(cell(c, s) for c, s in enumerate(cells)))
            for h, cells in enumerate(layout)
        ),
    )


@dataclass(frozen=True, slots=True)
class SiteDef:
    id: str
    region: str
    hosts: int = 4
    shapes: tuple[CellShape, ...] = (CellShape(), CellShape())
    labels: dict[str, str] = field(default_factory=dict)
    health: str = "UP"
    zone: str = "z1"
    failure_domains: dict[str, str] = field(default_factory=dict)
    per_host: tuple[tuple[CellShape, ...], ...] = ()
    """Hosts that differ: one tuple of cells per host (``hosts`` and ``shapes`` ignored)."""


def site_keys(d: SiteDef) -> list[tuple[str, bytes]]:
    spec = SiteSpec(d.id, d.region, d.zone, dict(d.failure_domains), labels=dict(d.labels))
    health = SiteHealth(d.id, Health(d.health), 0)
    return [
        (keys.site(d.id), codec.encode(spec)),
        (keys.health(d.id), codec.encode(health)),
        (keys.inventory(d.id), codec.encode(inventory(d.id, d.hosts, d.shapes, d.per_host))),
    ]


def latency_value(entries: Sequence[tuple[str, str, float]]) -> bytes:
    return json.dumps({"entries": [{"a": a, "b": b, "ms": ms} for a, b, ms in entries]}).encode()


def world(sites: Sequence[SiteDef], latency: Sequence[tuple[str, str, float]] = ()) -> Snapshot:
    snap = Snapshot()
    rev = 0
    for d in sites:
        for key, value in site_keys(d):
            rev += 1
            snap.apply(key, value, rev)
    if latency:
        snap.apply(keys.LATENCY, latency_value(latency), rev + 1)
    snap.arrays()
    return snap


async def seed_store(
    store: Store, sites: Sequence[SiteDef], latency: Sequence[tuple[str, str, float]] = ()
) -> None:
    for d in sites:
        for key, value in site_keys(d):
            await store.put(key, value)
    if latency:
        await store.put(keys.LATENCY, latency_value(latency))


def regions(n_per_region: int, regions: int = 3, **kw: object) -> list[SiteDef]:
    return [
        SiteDef(f"s{r}-{i}", f"region-{r}", **kw)  # type: ignore[arg-type]
        for r in range(1, regions + 1)
        for i in range(n_per_region)
    ]


def sample(name: str) -> vnf_model.Descriptor:
    return vnf_model.parse((SAMPLES / f"{name}.yaml").read_text())


def paris_latency(sites: Sequence[SiteDef], ms: float = 10.0) -> list[tuple[str, str, float]]:
    out = [("metro-paris", s.id, ms) for s in sites]
    out += [(a.id, b.id, ms * 2) for i, a in enumerate(sites) for b in sites[i + 1 :]]
    return out


def big(name: str = "vepc", vdus: int = 3, per_vdu: int = 20, points: int = 4) -> dict[str, object]:
    """A descriptor of ``vdus * per_vdu`` small active-active members (host anti-affinity
    within each VDU), each with ``points`` connection points on as many links."""
    links = [f"l{i}" for i in range(points)]
    return {
        "apiVersion": "meridian.nfv/v1",
        "kind": "VnfDescriptor",
        "name": name,
        "tenant": "acme-nfv",
        "sw_images": [
            {
                "name": "upf",
                "version": "1",
                "disk_format": "qcow2",
                "size": 1048576,
                "checksum": "ab" * 32,
            }
        ],
        "virtual_links": [{"name": link} for link in links],
        "vdus": [
            {
                "name": f"v{j}",
                "sw_image": "upf",
                "virtual_compute": {"num_virtual_cpu": 1, "virtual_mem_size_mb": 512},
                "connection_points": [
                    {"name": f"c{i}", "virtual_link": link} for i, link in enumerate(links)
                ],
                "redundancy": {"model": "active-active", "n": per_vdu},
            }
            for j in range(vdus)
        ],
    }
