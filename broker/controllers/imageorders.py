"""Placement asks for images: a VNF placed at a site that lacks one of its ``sw_images``
orders the copy itself, instead of waiting for an operator.

``missing`` finds, for the members a plan puts at each site, the catalog image whose
sha256 is the descriptor's ``checksum`` and that the site neither holds (``active``
replica) nor was already asked for; ``order`` adds those sites to the image's targets —
what ``POST /v1/images/{id}/replicate`` does — so the replication controller copies it.
The VNF's reason says what its members wait for (``waiting``). A ``sw_image`` with no
catalog image of that checksum is not orderable: the site must already hold it, and the
reason says so.

Invariant: every order is a fenced transaction that also compares the catalog entry's
revision (an API request or the replication controller changing it meanwhile is read
again, never overwritten); an image is asked for only at sites a member was placed at.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from broker import errors
from broker.election.fencing import fenced_txn
from broker.models import codec, event
from broker.models import vnf as model
from broker.placement.plan import Assignment
from broker.store import keys
from broker.store.protocol import Compare, KeyValue, Op, Put, Store, Target
from replication import catalog
from replication import errors as rerrors
from replication.catalog import Entry, SiteId, State

log = logging.getLogger(__name__)

ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class Need:
    """``sw_image`` (catalog image ``image``, "" if none has its checksum) wanted at ``site``."""

    site: str
    sw_image: str
    image: str


async def _catalog(store: Store) -> tuple[dict[str, tuple[Entry, KeyValue]], set[tuple[str, str]]]:
    """Catalog entries by sha256, and the (image, site) pairs active or on their way."""
    kvs, _ = await store.get_prefix(keys.IMAGES)
    by_sha: dict[str, tuple[Entry, KeyValue]] = {}
    placed: set[tuple[str, str]] = set()
    for kv in kvs:
        image_id, site = keys.split_image_key(kv.key)
        try:
            if not site:
                entry = Entry.decode(kv.value)
                by_sha.setdefault(entry.image.sha256, (entry, kv))
            elif catalog.decode_replica(kv.value).state is not State.FAILED:
                placed.add((image_id, site))
        except rerrors.ReplicationError as exc:
            raise errors.BrokerError(f"the value stored at {kv.key!r} is corrupt: {exc}") from exc
    return by_sha, placed


async def missing(
    store: Store, desc: model.Descriptor, assignments: Sequence[Assignment]
) -> list[Need]:
    """Every (site, sw_image) of the plan whose image is not at that site nor on its way."""
    by_sha, placed = await _catalog(store)
    vdus = {v.name: v.sw_image for v in desc.vdus}
    images = {s.name: s for s in desc.sw_images}
    out: set[Need] = set()
    for a in assignments:
        sw = images.get(vdus.get(a.member.vdu, ""))
        if sw is None:
            continue  # a catalog image named directly: placement checked it exists
        found = by_sha.get(sw.checksum)
        if found is None:
            out.add(Need(a.site, sw.name, ""))
            continue
        entry = found[0]
        if (entry.image.id, a.site) in placed or a.site in entry.targets:
            continue
        out.add(Need(a.site, sw.name, entry.image.id))
    return sorted(out, key=lambda n: (n.site, n.sw_image))


def waiting(needs: Sequence[Need]) -> str:
    """The VNF's reason while its members wait for image copies ("" if they need none)."""
    parts = [
        f"image {n.image} copy ordered to {n.site}"
        if n.image
        else f"sw_image {n.sw_image} is not at {n.site} and no catalog image has its checksum"
        for n in needs
    ]
    return f"members wait: {'; '.join(parts)}" if parts else ""


async def order(
    store: Store, fence: int, vnf_id: str, needs: Sequence[Need], *, replica: str = ""
) -> None:
    """Add each need's site to its image's targets (one fenced txn per image)."""
    sites: dict[str, set[str]] = {}
    for n in needs:
        if n.image:
            sites.setdefault(n.image, set()).add(n.site)
    for image_id, wanted in sorted(sites.items()):
        for _ in range(ATTEMPTS):
            if await _order_one(store, fence, vnf_id, image_id, wanted, replica):
                break


async def _order_one(
    store: Store, fence: int, vnf_id: str, image_id: str, wanted: set[str], replica: str
) -> bool:
    kv = await store.get(keys.image(image_id))
    if kv is None:
        return True  # deleted meanwhile: nothing to order
    try:
        entry = Entry.decode(kv.value)
    except rerrors.ReplicationError as exc:
        raise errors.BrokerError(f"the value stored at {kv.key!r} is corrupt: {exc}") from exc
    new = set(wanted) - set(entry.targets)
    if not new:
        return True
    updated = Entry(
        entry.image,
        entry.policy,
        tuple(sorted({*entry.targets, *(SiteId(s) for s in new)})),
        entry.generation + 1,
        entry.created_ms,
    )
    message = f"vnf {vnf_id} placed at {', '.join(sorted(new))}: image {image_id} copy ordered"
    ev = event.new("image.replicate", image_id, message, replica=replica)
    check = Compare(kv.key, Target.MOD, Op.EQUAL, kv.mod_revision)
    try:
        await fenced_txn(
            store,
            fence,
            [Put(kv.key, updated.encode()), Put(keys.event(ev.id), codec.encode(ev))],
            extra_compares=[check],
        )
    except errors.Conflict:
        return False  # the entry changed meanwhile: read it again
    log.info("%s", message)
    return True
