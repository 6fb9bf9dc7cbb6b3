"""The what-if's image table: for each replacement, is its image at the target site, and
if not, how long its replication would take.

It answers as the failover controller's restore does (``replacing._image_at``): an image
the descriptor declares (``sw_images``) is built by the site itself; a catalogued image
must have an active replica at the site, else restore orders its replication and waits
for it — the estimate is the image's size over the replication rate measured for it
(the best rate its replicas last reported), else over the rate measured across the
catalogue (the median), else over ``images.estimate_rate_mbps``; an image the catalogue
does not know is left to the site's own image store.

Invariant: pure and read-only: the table is data beside the decisions, never a write.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.models import vnf as model
from replication import catalog as cat

DECLARED, PRESENT, REPLICATE, UNKNOWN = (
    "declared: built by the site",
    "present",
    "replication needed",
    "not catalogued: the site's own store",
)


@dataclass(frozen=True, slots=True)
class Known:
    """One catalogued image: its size, where it is active, its best measured rate."""

    size: int
    active_at: frozenset[str] = frozenset()
    rate: float = 0.0
    """Bytes/s, the best its replicas last reported (0: none measured)."""


@dataclass(frozen=True, slots=True)
class Catalog:
    images: Mapping[str, Known] = field(default_factory=dict)
    rate: float = 100e6
    """Bytes/s when an image has no measured rate of its own."""

    @classmethod
    def build(
        cls,
        entries: Iterable[cat.Entry],
        replicas: Iterable[cat.Replica],
        default_rate: float,
    ) -> Catalog:
        """From the catalogue's entries and replica states."""
        active: dict[str, set[str]] = {}
        rates: dict[str, float] = {}
        for r in replicas:
            if r.state is cat.State.ACTIVE:
                active.setdefault(r.image, set()).add(r.site)
            if r.rate > 0:
                rates[r.image] = max(rates.get(r.image, 0.0), r.rate)
        images: dict[str, Known] = {
            str(e.image.id): Known(
                e.image.size, frozenset(active.get(e.image.id, ())), rates.get(e.image.id, 0.0)
            )
            for e in entries
        }
        measured = list(rates.values())
        return cls(images, statistics.median(measured) if measured else default_rate)

    def row(self, desc: model.Descriptor, vdu: str, member: str, site: str) -> dict[str, Any]:
        """The table's line for ``member`` replaced at ``site``."""
        image = desc.vdu(vdu).sw_image
        line: dict[str, Any] = {"member": member, "site": site, "image": image}
        known = self.images.get(image)
        if image in {s.name for s in desc.sw_images}:
            return line | {"status": DECLARED, "estimate_s": 0.0}
        if known is None:
            return line | {"status": UNKNOWN, "estimate_s": 0.0}
        if site in known.active_at:
            return line | {"status": PRESENT, "estimate_s": 0.0}
        rate = known.rate or self.rate
        return line | {
            "status": REPLICATE,
            "bytes": known.size,
            "estimate_s": round(known.size / rate, 1),
            "rate_mbps": round(rate / 1e6, 1),
        }
