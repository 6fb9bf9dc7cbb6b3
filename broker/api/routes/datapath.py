"""``/v1/sites/{id}/datapath``: a site's data-path profile (desired) and what its agent did.

``PUT`` stores the profile as the site's ``desired/<site>/datapath/host`` object: a new
object is generation 1, a changed profile the next generation, an unchanged one keeps its
generation (nothing is re-sent). The write is one transaction that compares the key's
revision as read, so two concurrent PUTs never produce one generation twice, and it
carries its event. The agent applies the profile (it owns the full check against its
host: PFs, memory, CPUs, foreign bridges) and reports ``observed/<site>/datapath/host``,
which ``GET`` returns beside the desired object. The broker checks only the shape here: a
JSON object of the profile's sections.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse

from broker import errors
from broker.api import deps
from broker.api.routes.common import as_json, decode_stored
from broker.api.routes.sites import check_id
from broker.models import codec, objects
from broker.models import event as events
from broker.store import keys
from broker.store.protocol import Compare, Get, Op, Put, Target

router = APIRouter(prefix="/v1/sites", tags=["sites"])
NAME = "host"
SECTIONS = frozenset({"policy", "hugepages", "sriov", "ovs", "cpu"})


def _check_profile(profile: Any) -> dict[str, Any]:
    if not isinstance(profile, dict):
        raise errors.InvalidInput("body", "a data-path profile is a JSON object")
    unknown = sorted(set(profile) - SECTIONS)
    if unknown:
        raise errors.InvalidInput(
            unknown[0], f"not a profile section (sections: {', '.join(sorted(SECTIONS))})"
        )
    return profile


@router.put("/{site_id}/datapath", status_code=202)
async def set_profile(
    site_id: str, state: deps.State, who: deps.Admin, profile: Annotated[Any, Body()]
) -> JSONResponse:
    check_id(site_id)
    spec = _check_profile(profile)
    key = keys.desired(site_id, objects.DATAPATH.name, NAME)
    got = await state.store.txn([], [Get(keys.site(site_id)), Get(key)])
    site_kv, current_kv = (r[0] if r else None for r in got.responses)
    if site_kv is None:
        raise errors.NotFound("site", site_id)
    current = objects.DATAPATH.decode(current_kv.value) if current_kv else None
    if current is not None and not current.deleted and dict(current.spec) == spec:
        return JSONResponse({"site": site_id, "generation": current.generation}, 202)
    desired = objects.first(spec) if current is None else current.revise(spec)
    event = events.new(
        "site.datapath.set",
        site_id,
        f"data-path profile of site {site_id} set to generation {desired.generation} by {who.user}",
        replica=state.replica,
    )
    guard = (
        Compare(key, Target.MOD, Op.EQUAL, current_kv.mod_revision)
        if current_kv is not None
        else Compare(key, Target.CREATE, Op.EQUAL, 0)
    )
    result = await state.store.txn(
        [guard, Compare(keys.site(site_id), Target.CREATE, Op.GREATER, 0)],
        [Put(key, desired.encode()), Put(keys.event(event.id), codec.encode(event))],
    )
    if not result.succeeded:
        raise errors.Conflict(f"the data-path profile of site {site_id} changed meanwhile; retry")
    return JSONResponse({"site": site_id, "generation": desired.generation}, 202)


@router.get("/{site_id}/datapath")
async def show_profile(site_id: str, state: deps.State, _: deps.SiteReader) -> dict[str, Any]:
    check_id(site_id)
    got = await state.store.txn(
        [],
        [
            Get(keys.site(site_id)),
            Get(keys.desired(site_id, objects.DATAPATH.name, NAME)),
            Get(keys.observed(site_id, objects.DATAPATH.name, NAME)),
        ],
    )
    site_kv, desired_kv, observed_kv = (r[0] if r else None for r in got.responses)
    if site_kv is None:
        raise errors.NotFound("site", site_id)
    if desired_kv is None:
        raise errors.NotFound("data-path profile of site", site_id)
    desired = decode_stored(objects.Desired, desired_kv)
    observed = decode_stored(objects.Status, observed_kv) if observed_kv else None
    return {
        "site": site_id,
        "generation": desired.generation,
        "deleted": desired.deleted,
        "profile": dict(desired.spec),
        "observed": as_json(observed) if observed else None,
        "revision": got.revision,
    }
