"""``meridian network create|list|show|verify|delete`` against the real API app, with the
stitching controller and the agents' answers (our seam) on the app's loop."""

from __future__ import annotations

import asyncio
import json
import time

from typer.testing import CliRunner

from broker.cli import network
from broker.controllers.stitching import StitchingController
from broker.store import keys
from tests.support.stitchfed import SETTINGS, agents, seed
from tests.unit.broker.cli.clitest_support import Broker

runner = CliRunner()


def start(broker: Broker) -> list[asyncio.Task[None]]:
    fence = broker.loop.run(seed(broker.store))

    async def spawn() -> list[asyncio.Task[None]]:
        ctl = StitchingController(broker.store, fence, SETTINGS)
        return [asyncio.create_task(ctl.run()), asyncio.create_task(agents(broker.store))]

    return broker.loop.run(spawn())


def test_create_show_list_verify_delete(broker: Broker) -> None:
    tasks = start(broker)
    try:
        made = runner.invoke(
            network.app,
            ["create", "sync", "--tenant", "t1", "--sites", "east,west", "--cidr", "/25"],
        )
        assert made.exit_code == 0, made.output
        assert "10.50.0.0/25" in made.stdout and "vni 10000" in made.stdout
        assert "east" in made.stdout and "10.50.0.1" in made.stdout
        deadline = time.monotonic() + 10
        while "READY" not in runner.invoke(network.app, ["show", "sync"]).stdout:
            assert time.monotonic() < deadline, "never READY"
            time.sleep(0.05)
        listed = json.loads(runner.invoke(network.app, ["list", "-o", "json"]).stdout)
        assert [n["id"] for n in listed] == ["sync"]
        checked = runner.invoke(network.app, ["verify", "sync"])
        assert checked.exit_code == 0, checked.output
        assert "all pairs reachable" in checked.stdout and "west" in checked.stdout
        bad = runner.invoke(network.app, ["create", "x", "--tenant", "t1", "--sites", "mars"])
        assert bad.exit_code == 1 and "not registered: mars" in bad.output
        assert "Traceback" not in bad.output
        gone = runner.invoke(network.app, ["delete", "sync"])
        assert gone.exit_code == 0, gone.output
        while broker.loop.run(broker.store.get(keys.network("sync"))) is not None:
            assert time.monotonic() < deadline + 10, "never deleted"
            time.sleep(0.05)
    finally:
        for t in tasks:
            broker.loop.loop.call_soon_threadsafe(t.cancel)
