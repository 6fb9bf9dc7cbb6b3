"""``/v1/images``: register an image held at a site, follow its replicas, replicate it.

``POST /v1/images`` registers an image its source site already holds (in its Glance, or
its sim store): id, size, sha256 and Glance's multihash, formats, a replication policy
(``all``, a selector such as ``region=eu``, or none) and explicit targets. ``GET`` shows
the catalog entry with every site's replica state (queued, transferring with bytes and
rate, active, failed with the reason). ``POST /v1/images/{id}/replicate`` adds targets
(site ids, or every site a selector matches) and bumps the entry's generation, so a
replica that failed under an older generation is tried again.

Invariant: the API writes only the catalog entry (create-only, or compare-and-swap on
its revision); replica states are the fenced replication controller's alone. Bad input
is a problem+json naming the field; nothing is written.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import Field, field_validator

from broker import errors
from broker.api import deps, schemas
from broker.api.schemas import Closed
from broker.models import codec, objects
from broker.models import event as events
from broker.models.site import SiteSpec
from broker.store import keys
from broker.store.protocol import Compare, Op, Put, Store, Target
from replication import catalog, policy
from replication import errors as rerrors
from replication.catalog import Entry, SiteId

router = APIRouter(prefix="/v1/images", tags=["images"])

MAX_IMAGE_BYTES = 2**50  # 1 PiB: larger is a typo or an attack, not an image
MAX_TARGETS = 4096


class ImageIn(Closed):
    """``POST /v1/images``."""

    id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=255)
    size: int = Field(ge=0, le=MAX_IMAGE_BYTES)
    sha256: str = Field(max_length=64)
    source_site: str = Field(min_length=1, max_length=63)
    os_hash_algo: str = Field(default="sha512", max_length=16)
    os_hash_value: str = Field(default="", max_length=128)
    disk_format: str = Field(default="raw", max_length=16)
    container_format: str = Field(default="bare", max_length=16)
    properties: dict[str, str] = Field(default_factory=dict)
    policy: str = Field(
        default="", max_length=255, description='"all", a selector like "region=eu", or ""'
    )
    replicate_to: list[str] = Field(default_factory=list, max_length=MAX_TARGETS)

    @field_validator("properties")
    @classmethod
    def _properties(cls, value: dict[str, str]) -> dict[str, str]:
        return schemas.properties(value)


class ReplicateIn(Closed):
    """``POST /v1/images/{id}/replicate``: site ids, or a selector, or both."""

    to: list[str] = Field(default_factory=list, max_length=MAX_TARGETS)
    selector: str = Field(default="", max_length=255)


async def _sites(store: Store) -> list[policy.SiteInfo]:
    kvs, _ = await store.get_prefix(keys.SITES)
    out = []
    for kv in kvs:
        spec = codec.decode(SiteSpec, kv.value)
        out.append(policy.SiteInfo(SiteId(spec.id), spec.region, dict(spec.labels)))
    return out


def _targets(
    field: str, to: list[str], selector: str, sites: list[policy.SiteInfo]
) -> list[SiteId]:
    known = {s.id for s in sites}
    for i, site in enumerate(to):
        if site not in known:
            raise errors.InvalidInput(f"{field}[{i}]", f"site {site!r} is not registered")
    chosen = [SiteId(s) for s in to]
    if selector:
        try:
            sel = policy.Selector.parse(selector)
        except rerrors.InvalidImage as exc:
            raise errors.InvalidInput("selector", exc.problem) from exc
        matched = sorted(policy.resolve(sel, sites))
        if not matched:
            raise errors.InvalidInput("selector", f"{selector!r} matches no registered site")
        chosen += matched
    return sorted(set(chosen))


async def _entry(store: Store, image_id: str) -> tuple[Entry, int]:
    kv = await store.get(keys.image(image_id))
    if kv is None:
        raise errors.NotFound("image", image_id)
    try:
        return Entry.decode(kv.value), kv.mod_revision
    except rerrors.ReplicationError as exc:
        raise errors.BrokerError(f"the value stored at {kv.key!r} is corrupt: {exc}") from exc


async def _replicas(store: Store, image_id: str) -> list[dict[str, Any]]:
    kvs, _ = await store.get_prefix(keys.image_replicas(image_id))
    out = []
    for kv in kvs:
        try:
            replica = catalog.decode_replica(kv.value)
        except rerrors.ReplicationError as exc:
            raise errors.BrokerError(f"the value stored at {kv.key!r} is corrupt: {exc}") from exc
        out.append({**replica.to_dict(), "path": await _path(store, replica)})
    return out


async def _path(store: Store, replica: catalog.Replica) -> str:
    """How the replica's current attempt copies (``direct`` / ``relay``), as its site
    reported; ``""`` before the first report or for an older attempt's."""
    kv = await store.get(keys.image_copy(replica.site, replica.image))
    if kv is None:
        return ""
    try:
        report = objects.IMAGE_COPY.decode(kv.value)
    except errors.InvalidInput:
        return ""
    return report.path if report.attempt == replica.ticket else ""


def _view(entry: Entry, replicas: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **entry.image.to_dict(),
        "policy": entry.policy,
        "targets": list(entry.targets),
        "generation": entry.generation,
        "created_ms": entry.created_ms,
        "replicas": replicas,
    }


@router.post("", status_code=201)
async def register(body: ImageIn, state: deps.State, who: deps.Admin) -> JSONResponse:
    fields = body.model_dump(exclude={"policy", "replicate_to"})
    try:
        image = catalog.Image.from_dict(fields)
        policy.parse(body.policy)
    except rerrors.InvalidImage as exc:
        name = "policy" if exc.field == "selector" else exc.field
        raise errors.InvalidInput(name, exc.problem) from exc
    sites = await _sites(state.store)
    if image.source_site not in {s.id for s in sites}:
        raise errors.InvalidInput("source_site", f"site {image.source_site!r} is not registered")
    targets = _targets("replicate_to", body.replicate_to, "", sites)
    entry = Entry(image, body.policy.strip(), tuple(targets), 1, int(time.time() * 1000))
    ev = events.new(
        "image.registered",
        image.id,
        f"image {image.id} ({image.size} bytes) registered from {image.source_site} by {who.user}",
        replica=state.replica,
    )
    key = keys.image(image.id)
    result = await state.store.txn(
        [Compare(key, Target.CREATE, Op.EQUAL, 0)],
        [Put(key, entry.encode()), Put(keys.event(ev.id), codec.encode(ev))],
    )
    if not result.succeeded:
        raise errors.AlreadyExists("image", image.id)
    return JSONResponse(
        _view(entry, []), status_code=201, headers={"Location": f"/v1/images/{image.id}"}
    )


@router.get("")
async def list_images(state: deps.State, who: deps.Reader) -> dict[str, Any]:
    kvs, _ = await state.store.get_prefix(keys.IMAGES)
    images: dict[str, dict[str, Any]] = {}
    for kv in kvs:
        image_id, site = keys.split_image_key(kv.key)
        try:
            if not site:
                entry = Entry.decode(kv.value)
                images.setdefault(image_id, {"states": {}}).update(
                    {
                        "id": image_id,
                        "name": entry.image.name,
                        "size": entry.image.size,
                        "source_site": entry.image.source_site,
                        "policy": entry.policy,
                    }
                )
            else:
                r = catalog.decode_replica(kv.value)
                states = images.setdefault(image_id, {"states": {}})["states"]
                states[r.state.value] = states.get(r.state.value, 0) + 1
        except rerrors.ReplicationError as exc:
            raise errors.BrokerError(f"the value stored at {kv.key!r} is corrupt: {exc}") from exc
    return {"images": [v for v in images.values() if "id" in v]}


@router.get("/{image_id}")
async def show(image_id: str, state: deps.State, who: deps.Reader) -> dict[str, Any]:
    entry, _ = await _entry(state.store, image_id)
    return _view(entry, await _replicas(state.store, image_id))


@router.post("/{image_id}/replicate", status_code=202)
async def replicate(
    image_id: str, body: ReplicateIn, state: deps.State, who: deps.Admin
) -> JSONResponse:
    if not body.to and not body.selector:
        raise errors.InvalidInput("to", "name at least one site, or give a selector")
    sites = await _sites(state.store)
    wanted = _targets("to", body.to, body.selector, sites)
    entry, revision = await _entry(state.store, image_id)
    updated = Entry(
        entry.image,
        entry.policy,
        tuple(sorted(set(entry.targets) | set(wanted))),
        entry.generation + 1,
        entry.created_ms,
    )
    ev = events.new(
        "image.replicate",
        image_id,
        f"{who.user} asked for image {image_id} at {', '.join(wanted)}",
        replica=state.replica,
    )
    key = keys.image(image_id)
    result = await state.store.txn(
        [Compare(key, Target.MOD, Op.EQUAL, revision)],
        [Put(key, updated.encode()), Put(keys.event(ev.id), codec.encode(ev))],
    )
    if not result.succeeded:
        raise errors.Conflict(f"image {image_id} changed while replicating it", retry_after=0.0)
    view = _view(updated, await _replicas(state.store, image_id))
    view["requested"] = list(wanted)
    return JSONResponse(view, status_code=202)
