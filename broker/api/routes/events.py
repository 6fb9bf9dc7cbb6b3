"""``/v1/events``: what happened in the federation, oldest first.

Event ids sort by time (zero-padded unix ms, then a random suffix), and the store lists
keys sorted, so paging is by id: ``since`` returns the events after that id — the next
page, or the new ones for ``--follow`` — and without it the newest ``limit`` events.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from broker.api import deps
from broker.api.routes.common import as_json, decode_stored
from broker.models.event import Event
from broker.store import keys

router = APIRouter(prefix="/v1/events", tags=["events"])

MAX_LIMIT = 1000


@router.get("")
async def list_events(
    state: deps.State,
    _: deps.Reader,
    since: Annotated[str | None, Query(max_length=64, description="an event id")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    subject: Annotated[str | None, Query(max_length=253)] = None,
) -> dict[str, Any]:
    items, revision = await state.store.get_prefix(keys.EVENTS)
    if since is not None:
        after = keys.event(since)
        items = [kv for kv in items if kv.key > after]
    found = [decode_stored(Event, kv) for kv in items]
    if subject is not None:
        found = [e for e in found if e.subject == subject]
    page = found[:limit] if since is not None else found[-limit:]
    return {"events": [as_json(e) for e in page], "revision": revision}
