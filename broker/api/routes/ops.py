"""``/healthz``, ``/metrics`` and ``/v1/leader``: what probes, scrapers and operators poll.

``/healthz`` answers 200 only after a real store read, so a replica that cannot reach
etcd is taken out of load balancing (503) rather than serving errors.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from broker import errors
from broker.api import deps
from broker.election import fencing
from broker.store import keys

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz(state: deps.State) -> dict[str, Any]:
    await state.store.get(keys.LEADER)
    return {"status": "ok", "etcd": "ok", "replica": state.replica}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/leader")
async def leader(state: deps.State, _: deps.Reader) -> dict[str, Any]:
    found = await fencing.current_leader(state.store)
    if found is None:
        raise errors.Temporary(
            "no leader elected: an election is under way or no replica is campaigning; "
            "retry shortly",
            retry_after=1.0,
        )
    name, fence = found
    return {"leader": name, "fence": fence, "replica": state.replica}
