"""An agent survives a cloud that fails now and then, on a real gateway over real mTLS.

A site's OpenStack API that resets a connection (a restarted nova-api, an overloaded
uWSGI) makes the driver raise a temporary ``DriverError``. When that happens while the
inventory for Hello is read, the session dials again; when it happens while usage is
read for a heartbeat, that beat goes without usage. Neither ends the agent, and the site
stays connected and reports usage again once the cloud answers.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from broker.store import keys
from broker.store.memory import MemoryStore
from siteagent import errors, models
from siteagent.drivers.sim import SimSite
from siteagent.reconciler import Reconciler
from siteagent.session import Session
from siteagent.settings import AgentSettings, SessionSettings
from tests.support import gateway as gw

pytestmark = [pytest.mark.grpc]


class FlakySite(SimSite):
    """The first inventory and every other usage listing fail like a reset connection."""

    inventories = 0
    usages = 0

    async def inventory(self) -> models.Inventory:
        self.inventories += 1
        if self.inventories == 1:
            raise errors.DriverError("inventory", "site-a", "connection reset", temporary=True)
        return await super().inventory()

    async def usage(self) -> models.Usage:
        self.usages += 1
        if self.usages % 2 == 1:
            raise errors.DriverError("usage", "site-a", "connection reset", temporary=True)
        return models.Usage(projects={"p1": {"instances": 1}})


async def test_failing_inventory_and_usage_calls_do_not_end_the_session(tmp_path: Path) -> None:
    pki = gw.make_pki(tmp_path / "pki", ["site-a"])
    store = MemoryStore()
    await gw.register(store, "site-a")
    async with gw.running_gateway(store, pki) as running:
        settings = AgentSettings(
            site_id="site-a",
            tls=gw.agent_tls(pki, "site-a"),
            session=SessionSettings(
                brokers=(running.address,), backoff_initial=0.05, backoff_max=0.1
            ),
        )
        driver = FlakySite.generated("site-a", hosts=1, cells=1, seed=1)
        session = Session(settings, driver, Reconciler(driver))
        task = asyncio.create_task(session.run())
        try:
            async with asyncio.timeout(20):
                while session.stats.acked < 6 or driver.usages < 6:
                    assert not task.done(), task.result()
                    await asyncio.sleep(0.05)
            assert driver.inventories >= 2  # the first Hello failed, the next one went out
            assert session.stats.welcomed >= 1
            reported = await store.get(keys.usage("site-a"))
            assert reported is not None and json.loads(reported.value) == {
                "p1": {"instances": 1}
            }
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    await store.close()
