"""``/v1/events``: what happened in the federation, oldest first, a page at a time.

Event ids sort by time (zero-padded unix ms, then a random suffix) and the store reads
key ranges in order, so every filter on time is a key range and every cursor is an event
id: ``since`` returns the events after that id (the next page, or the new ones for
``--follow``); without it, the newest ``limit`` events, and ``before`` pages back from
there. ``next`` is the cursor to pass back in the same direction (null: nothing further
matched). A request reads at most ``SCAN_MAX`` events whatever its filters, so none reads
the whole prefix; the leader trims what is older than the retention
(``controllers/retention.py``).
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
SCAN_MAX = 5000
"""Events one request examines at most (a page that filters out most ends early)."""


def _bounds(
    since: str | None, before: str | None, since_ms: int | None, until_ms: int | None
) -> tuple[str, str]:
    """The key range (exclusive both ends, empty: open) the cursors and times allow."""
    low = max(since or "", f"{since_ms:013d}" if since_ms is not None else "")
    highs = [h for h in (before, f"{until_ms + 1:013d}" if until_ms is not None else None) if h]
    return low, min(highs, default="")


@router.get("")
async def list_events(
    state: deps.State,
    _: deps.Reader,
    since: Annotated[str | None, Query(max_length=64, description="an event id")] = None,
    before: Annotated[str | None, Query(max_length=64, description="an event id")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    subject: Annotated[str | None, Query(max_length=253)] = None,
    site: Annotated[str | None, Query(max_length=253, description="= subject")] = None,
    kind: Annotated[str | None, Query(max_length=64, description="e.g. site.down")] = None,
    since_ms: Annotated[int | None, Query(ge=0, description="at or after, unix ms")] = None,
    until_ms: Annotated[int | None, Query(ge=0, description="at or before, unix ms")] = None,
) -> dict[str, Any]:
    about = subject or site
    forward = since is not None
    after, upto = _bounds(since, before, since_ms, until_ms)
    page: list[Event] = []
    examined, revision, more, cursor = 0, 0, True, ""
    while more and len(page) < limit and examined < SCAN_MAX:
        kvs, revision, total = await state.store.get_range(
            keys.EVENTS,
            after=after,
            before=upto,
            limit=min(limit, SCAN_MAX - examined),
            descending=not forward,
        )
        more = total > len(kvs)
        for index, kv in enumerate(kvs):
            examined += 1
            cursor = keys.name_in(keys.EVENTS, kv.key)
            event = decode_stored(Event, kv)
            if (about is None or event.subject == about) and (kind is None or event.kind == kind):
                page.append(event)
                if len(page) == limit:
                    more = more or index < len(kvs) - 1
                    break
        if forward:
            after = cursor
        else:
            upto = cursor
    if not forward:
        page.reverse()
    return {
        "events": [as_json(e) for e in page],
        "revision": revision,
        "next": cursor if more and cursor else None,
    }
