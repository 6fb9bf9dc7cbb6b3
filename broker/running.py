"""Runs one broker replica: store, election, gateway, API and (while leading) controllers.

All root tasks share one asyncio loop and are supervised together: when any of them
ends or fails, the replica shuts down cleanly — the leader resigns, streams close, the
replica lease is revoked — and the log says which task ended and why. SIGTERM and
SIGINT do the same; SIGUSR1 logs every task's stack and goes on (``dump_tasks``: where
a replica that stopped deciding is waiting). Nothing here holds state that etcd does not
(invariant 1).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine, Sequence
from typing import Any

import uvicorn

from broker import errors
from broker.api import app as api_app
from broker.api import auth as api_auth
from broker.controllers import registry as registered
from broker.controllers.quotasync import QuotaMetrics
from broker.election.campaign import Campaign
from broker.gateway import server as gateway_server
from broker.gateway.feeds import DesiredFeed, RegisteredSites, ReplicaLease, Revocations
from broker.gateway.imageaccess import CatalogAccess
from broker.gateway.imagefeed import ImageOrders, grant_signer
from broker.gateway.quarantine import Quarantines
from broker.gateway.relay import Relay
from broker.gateway.servicer import Gateway
from broker.gateway.sessions import Registry
from broker import quotas as quota_seam
from broker.placement.snapshot import Live
from broker.quotas.headroom import Headroom
from broker.settings import BrokerSettings
from broker.store.client import EtcdClient, open_store

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0  # seconds before controllers stopped by a store error start again


def dump_tasks() -> int:
    """Log every task of the running loop with where it waits (``kill -USR1 <pid>``,
    as a Go program dumps its goroutines); returns how many."""
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    for task in tasks:
        frames = [  # not print_stack: it fails on a frame without a line number
            f"  {f.f_code.co_filename}:{f.f_lineno or 0} in {f.f_code.co_name}"
            for f in task.get_stack(limit=16)
        ]
        log.warning("task %s: %r\n%s", task.get_name(), task, "\n".join(frames))
    log.warning("%d tasks dumped", len(tasks))
    return len(tasks)


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def api_tls(settings: BrokerSettings) -> tuple[str | None, str | None]:
    """The API's certificate and key (the replica's own), or none when ``api.tls`` is off."""
    if not settings.api.tls:
        log.warning("API on plain HTTP (api.tls = false): tokens cross the network in clear")
        return None, None
    if not settings.tls.cert_file or not settings.tls.key_file:
        raise errors.SettingsError(
            [
                "api.tls: HTTPS needs tls.cert_file and tls.key_file (meridian pki "
                "issue-broker); api.tls = false serves plain HTTP, for tests only"
            ]
        )
    return settings.tls.cert_file, settings.tls.key_file


async def controllers(
    store: EtcdClient,
    settings: BrokerSettings,
    fence: int,
    quota_metrics: QuotaMetrics | None = None,
    headroom: Headroom | None = None,
    snapshot: Live | None = None,
    entries: Sequence[registered.Entry] | None = None,
) -> None:
    """Everything the leader runs (``registered.leader()`` unless ``entries`` are given);
    cancelled the moment leadership is lost.

    VNF placement reserves through ``headroom`` (the replica's quota seam unless given)
    and plans on ``snapshot`` (the replica's live placement snapshot; its own if not).
    """
    log.info("leading with fence %d: controllers start", fence)
    if headroom is None:
        headroom = quota_seam.build(store, settings).headroom
    ctx = registered.Context(store, settings, fence, headroom, snapshot, quota_metrics)
    chosen = registered.leader() if entries is None else list(entries)
    while True:
        fenced = False
        try:
            async with asyncio.TaskGroup() as group:
                for entry in chosen:
                    group.create_task(entry.factory(ctx).run(), name=entry.name)
        except* errors.FencedOut as exc:
            # Another replica leads: nothing of ours landed. Return rather than wait here:
            # run_while_leading waits for the lost term itself and starts fresh controllers
            # in the next one (waiting here could swallow its cancellation and wedge it).
            log.error("controllers stopped, %s", exc.exceptions[0])
            fenced = True
        except* (errors.Temporary, errors.LeaseExpired) as exc:
            # etcd went away under a controller (and the term may still be ours): a
            # transient store error must neither stop the replica nor leave a leader
            # without controllers, so start them afresh once the store may be back.
            log.warning(
                "controllers paused (%s); restarting in %.0f s", exc.exceptions[0], RESTART_DELAY
            )
        if fenced:
            return
        await asyncio.sleep(RESTART_DELAY)


async def run(settings: BrokerSettings) -> None:
    api_auth.check_bind(settings.api.listen, settings.api.auth)
    store = open_store(settings.etcd)
    registry = Registry()
    lease = ReplicaLease(store, settings.gateway.lease_ttl)
    revocations = Revocations(store, registry)
    quarantines = Quarantines(store, registry)  # sites a live drill isolates
    sites = RegisteredSites(store)  # an opening stream's registration, without a read
    desired = DesiredFeed(store, registry)
    gateway = Gateway(
        store, settings, registry, lease, revocations, quarantines, sites=sites, desired=desired
    )
    signer = grant_signer(settings.images.grant_key_file)
    orders = ImageOrders(store, signer=signer, grant_ttl=settings.images.grant_ttl)
    relay = Relay(
        settings.tls.trust_domain,
        access=CatalogAccess(store),
        is_revoked=revocations.is_revoked,
        orders=orders,
    )
    revocations.also.append(relay.close_serial)  # open image calls end on revocation too
    grpc_server = gateway_server.build(settings, gateway, relay)
    authenticator = api_auth.from_settings(settings)
    # one quota seam per replica: the API and the leader's placements share its ledger
    quotas = quota_seam.build(store, settings)
    # one placement snapshot per replica, kept current from a watch once first read: the
    # API's dry-runs and explanations and (while leading) the VNF controller read it
    snapshot = Live(store)
    app = api_app.create_app(
        store,
        settings,
        replica=settings.name,
        auth=authenticator,
        quotas=quotas,
        snapshot=snapshot,
    )
    api_metrics = getattr(app.state, "metrics_registry", None)
    quota_metrics = QuotaMetrics(api_metrics)  # drift gauges on the same /metrics
    if api_metrics is not None:
        from broker.gateway import metrics as gateway_metrics

        gateway_metrics.register(api_metrics, registry, gateway)
    host, port = split_listen(settings.api.listen)
    cert, key = api_tls(settings)
    api = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            ssl_certfile=cert,
            ssl_keyfile=key,
        )
    )
    campaign = Campaign(store, settings.name, settings.election)

    await grpc_server.start()
    log.info(
        "replica %s: gateway on %s, API on %s",
        settings.name,
        settings.gateway.listen,
        settings.api.listen,
    )
    roots: dict[str, Coroutine[Any, Any, None]] = {
        "replica lease": lease.run(),
        "revocations": revocations.run(),
        "drill quarantines": quarantines.run(),
        "desired feed": desired.run(),
        "registered sites": sites.run(),
        "liveness": gateway.liveness.run(),
        "image orders": orders.run(),
        **{
            entry.name: entry.factory(
                registered.Context(store, settings, 0, quotas.headroom, snapshot, quota_metrics)
            ).run()
            for entry in registered.every_replica()
        },
        "election": campaign.run(),
        "controllers": campaign.run_while_leading(
            lambda fence: controllers(
                store, settings, fence, quota_metrics, quotas.headroom, snapshot
            )
        ),
        "api": api.serve(),
    }
    tasks: dict[asyncio.Task[Any], str] = {
        asyncio.create_task(coro, name=name): name for name, coro in roots.items()
    }
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait(), name="signal")
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is stopper:
                log.info("replica %s: stopping on signal", settings.name)
            elif task.cancelled():
                log.error("root task %r was cancelled: stopping", tasks[task])
            elif task.exception() is not None:
                log.error("root task %r failed: stopping", tasks[task], exc_info=task.exception())
            else:
                log.error("root task %r ended: stopping", tasks[task])
    finally:
        api.should_exit = True
        for session in registry.all():
            session.close("broker replica shutting down")
        await grpc_server.stop(grace=1.0)
        # cancelling the campaign resigns: a follower takes over in milliseconds
        election = next(t for t, n in tasks.items() if n == "election")
        election.cancel()
        await asyncio.gather(election, return_exceptions=True)
        for task in [*tasks, stopper]:
            task.cancel()
        await asyncio.gather(*tasks, stopper, return_exceptions=True)
        await lease.revoke()
        await store.close()
        log.info("replica %s stopped", settings.name)
