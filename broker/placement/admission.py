"""Checks of a descriptor against the federation, before anything is stored.

The schema (``broker.models.vnf.parse``) knows nothing of the world; these checks do: an
anti-affinity scope wider than the federation (five regions asked, three exist), a
physical network no site has, a latency location nobody measured, an image neither the
descriptor nor the global catalog declares, or more objects than one VNF may place.
Each raises ``InvalidInput`` naming the field (a 422 at the API).

Invariant: a descriptor that passes is not *impossible*; it may still find no feasible
plan right now, which is data (the plan's reasons), not an input error.
"""

from __future__ import annotations

from collections.abc import Collection

from broker import errors
from broker.models.vnf import Descriptor, members
from broker.placement.snapshot import Snapshot

MAX_OBJECTS = 4000
"""Desired objects one VNF may place: the claims transaction carries what fits of them
and the rest follow in fenced batches (``broker.controllers.batches``); this bounds the
placement record (each object is named in it) well under etcd's 1.5 MiB request."""


def domains(snap: Snapshot, scope: str) -> int:
    """How many distinct values of ``scope`` the registered sites offer."""
    if scope == "host":
        return sum(len(s.hosts) for s in snap.order)
    return len({s.domain(scope, "") for s in snap.order if s.spec is not None})


def check(desc: Descriptor, snap: Snapshot, catalog: Collection[str] = ()) -> None:
    """Raise ``InvalidInput`` for the first impossible or unknown thing in ``desc``."""
    counts = {v.name: 0 for v in desc.vdus}
    for m in members(desc):
        counts[m.vdu] += 1
    for i, vdu in enumerate(desc.vdus):
        have = domains(snap, vdu.scope)
        if counts[vdu.name] > 1 and counts[vdu.name] > have:
            raise errors.InvalidInput(
                f"vdus[{i}].anti_affinity",
                f"{counts[vdu.name]} members must not share a {vdu.scope}, "
                f"but the federation has {have}",
            )
        if vdu.redundancy.min_sites > len(snap.order):
            raise errors.InvalidInput(
                f"vdus[{i}].redundancy.min_sites",
                f"{vdu.redundancy.min_sites} sites asked, {len(snap.order)} registered",
            )
        if vdu.sw_image not in {s.name for s in desc.sw_images} and vdu.sw_image not in catalog:
            raise errors.InvalidInput(
                f"vdus[{i}].sw_image", f"unknown image {vdu.sw_image!r}: declare it in sw_images"
            )
    for i, rule in enumerate(desc.anti_affinity):
        total = sum(counts[t] for t in set(rule.targets))
        have = domains(snap, rule.scope)
        if total > have:
            raise errors.InvalidInput(
                f"anti_affinity[{i}].scope",
                f"{total} members must not share a {rule.scope}, but the federation has {have}",
            )
    physnets = snap.physnets()
    for i, link in enumerate(desc.virtual_links):
        if link.physnet and link.physnet not in physnets:
            known = ", ".join(sorted(physnets)) or "none"
            raise errors.InvalidInput(
                f"virtual_links[{i}].physnet",
                f"no site has physical network {link.physnet!r} (known: {known})",
            )
    for i, bound in enumerate(desc.latency.to_locations):
        if bound.location not in snap.latency:
            raise errors.InvalidInput(
                f"latency.to_locations[{i}].location",
                f"unknown location {bound.location!r}: register it with PUT /v1/latency",
            )
    ops = _ops(desc)
    if ops > MAX_OBJECTS:
        raise errors.InvalidInput(
            "vdus", f"{ops} objects exceed what one VNF may place ({MAX_OBJECTS})"
        )


def _ops(desc: Descriptor) -> int:
    """An upper bound on the desired objects of the placement."""
    ms = members(desc)
    per_member = sum(len(desc.vdu(m.vdu).connection_points) + 3 for m in ms)
    shared = len(desc.sw_images) + len(desc.virtual_links) + 2 * len(desc.vdus)
    return per_member + shared * len(ms) + 2
