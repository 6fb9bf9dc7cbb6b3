"""Runs site agents: a driver, a reconciler and a session per site, supervised together.

One process may run many agents (each its own site, certificate and stream). A permanent
refusal (identity, version) stops that agent with a clear error; when the process runs a
single agent, the process exits with it, so its supervisor (systemd) can say why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
from typing import Any

from siteagent import errors, imagewire, models
from siteagent.datapath import setup, stitch
from siteagent.drivers import registry
from siteagent.drivers.base import Driver
from siteagent.hardware import sysfs
from siteagent.reconciler import Reconciler
from siteagent.session import Session, channel_credentials
from siteagent.settings import AgentSettings

log = logging.getLogger(__name__)


def make_driver(settings: AgentSettings) -> Driver:
    """The driver ``settings.driver`` names; with this machine added to its inventory as a
    host only when ``settings.hardware.compute_host`` says the machine is one."""
    driver = registry.make(settings)
    if settings.hardware.compute_host:
        driver = HardwareMerged(driver, settings)  # type: ignore[assignment]
    return driver


class HardwareMerged:
    """The driver, with this machine's own sysfs host added to its inventory."""

    def __init__(self, driver: Driver, settings: AgentSettings) -> None:
        self._driver = driver
        self._settings = settings

    def __getattr__(self, name: str) -> object:
        return getattr(self._driver, name)

    async def inventory(self) -> models.Inventory:
        inventory = await self._driver.inventory()
        hw = self._settings.hardware
        host = await asyncio.to_thread(sysfs.discover_host, hw.sysfs_root, physnets=hw.physnets)
        return dataclasses.replace(
            inventory,
            hosts=(*inventory.hosts, host),
            collected_unix_ms=int(time.time() * 1000),
        )


async def run_one(settings: AgentSettings) -> None:
    driver = make_driver(settings)
    datapath = setup.datapath_driver(driver, settings) if settings.datapath.enabled else None
    if datapath is not None:
        driver = datapath
    driver = stitch.stitch_driver(driver, settings)
    reconciler = Reconciler(driver)
    session = Session(settings, driver, reconciler)
    tasks = [
        asyncio.create_task(reconciler.run(), name=f"reconciler-{settings.site_id}"),
        asyncio.create_task(session.run(), name=f"session-{settings.site_id}"),
        asyncio.create_task(
            reconciler.reobserve(settings.reconcile.reobserve_interval),
            name=f"reobserve-{settings.site_id}",
        ),
    ]
    if datapath is not None:
        datapath.on_inventory = session.inventory_changed
        await setup.submit_local_profile(reconciler, settings)
        watch = datapath.watch(settings.datapath.drift_interval, reconciler.report)
        tasks.append(asyncio.create_task(watch, name=f"datapath-{settings.site_id}"))
    if settings.images.dir:
        images = imagewire.run_agent(settings, channel_credentials(settings))
        tasks.append(asyncio.create_task(images, name=f"images-{settings.site_id}"))
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        raise errors.SiteAgentError(f"site {settings.site_id}: a root task ended unexpectedly")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await driver.close()


async def run_many(all_settings: list[AgentSettings]) -> None:
    """Run every agent until SIGTERM/SIGINT; a single agent's failure ends the process."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    agents: dict[asyncio.Task[Any], str] = {
        asyncio.create_task(run_one(s), name=s.site_id): s.site_id for s in all_settings
    }
    stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait())
    pending: set[asyncio.Task[Any]] = set(agents)
    try:
        while pending:
            done, pending = await asyncio.wait(
                pending | {stopper}, return_when=asyncio.FIRST_COMPLETED
            )
            if stopper in done:
                log.info("stopping %d agent(s) on signal", len(agents))
                return
            pending.discard(stopper)
            for task in done:
                exc = task.exception()
                log.error("agent %s stopped: %s", agents[task], exc)
                if len(agents) == 1 and exc is not None:
                    raise exc
    finally:
        for task in agents:
            task.cancel()
        stopper.cancel()
        await asyncio.gather(*agents, stopper, return_exceptions=True)
