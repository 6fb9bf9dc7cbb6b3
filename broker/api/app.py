"""The northbound REST API of one broker replica: ``create_app`` builds it.

Every replica serves the same API over the same etcd (invariant 2), so the app keeps no
state of its own beyond caches: each request reads or writes the store, and an
unreachable store is a 503 problem, never a stale answer. Errors of every kind leave
through ``problems`` as application/problem+json.
"""

from __future__ import annotations

from fastapi import FastAPI

from broker.api import problems, refusals, schemas
from broker.api.auth import Authenticator
from broker.api.deps import ApiState
from broker.api.guard import Guard
from broker.api.metrics import ApiMetrics, MetricsMiddleware
from broker import quotas as quota_seam
from broker.api.routes import (
    datapath,
    drills,
    events,
    failover,
    images,
    networks,
    ops,
    pki,
    sites,
    vnfs,
)
from broker.api.routes import quotas as quota_routes
from broker.placement.snapshot import Live
from broker.settings import BrokerSettings
from broker.store.protocol import Store

VERSION = "1"


def create_app(
    store: Store,
    settings: BrokerSettings,
    *,
    replica: str,
    auth: Authenticator,
    quotas: quota_seam.Quotas | None = None,
    snapshot: Live | None = None,
) -> FastAPI:
    """The API app for replica ``replica``, reading and writing ``store``; quota requests
    go to ``quotas`` (the replica's seam), dry-runs and explanations read ``snapshot`` (the
    replica's live placement snapshot); the app makes its own of each when not given.

    ``app.state.metrics_registry`` is this app's Prometheus registry (served on
    ``/metrics``); other parts of the replica may register their collectors on it.
    """
    app = FastAPI(
        title="Meridian broker API",
        version=VERSION,
        description="Register sites, follow events and manage agent certificates.",
        responses=refusals.responses(),
    )
    app.state.api = ApiState(
        store=store,
        settings=settings,
        replica=replica,
        auth=auth,
        quotas=quotas or quota_seam.build(store, settings),
        snapshot=snapshot or Live(store),
    )
    api_metrics = ApiMetrics()
    app.state.metrics_registry = api_metrics.registry
    # the last added is outermost: metrics see every answer, the guard's refusals too
    app.add_middleware(Guard, auth=auth, max_body_bytes=settings.api.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=api_metrics)
    problems.install(app, schemas.allowed_fields())
    for module in (
        sites, datapath, events, pki, ops, vnfs, failover, quota_routes, images, networks
    ):
        app.include_router(module.router)
    app.include_router(drills.router)
    return app
