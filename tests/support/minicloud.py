"""Helpers for the openstack tier: the minicloud under test, and waiting on a real cloud."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from siteagent import models
from siteagent.drivers.openstack import OpenStackDriver

REPO = Path(__file__).resolve().parents[2]
MINICLOUD = REPO / "deploy/minicloud/minicloud"
CLOUD = "minicloud-site1"
PROJECT = "meridian"
UP_TIMEOUT = 1500.0
"""Seconds for ``minicloud up``: a cold start is ~3 min on an idle 2-core machine and was
measured at 11 min on one loaded by other test runs (deploy/minicloud/README.md)."""


SETTLE_WITHIN = 300.0


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode("utf-8", "replace")
    return output or ""


@dataclass(frozen=True)
class Minicloud:
    state_dir: Path
    clouds_yaml: Path

    def run(self, *args: str, timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MINICLOUD), "--state-dir", str(self.state_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def up(self) -> None:
        """``minicloud up --sites 2``; FAILS the test with ``up``'s progress lines and the
        failing service's log tail when it cannot start (never skips)."""
        try:
            done = self.run("up", "--sites", "2")
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"minicloud up did not finish within {exc.timeout:.0f}s (logs: "
                f"{self.state_dir / 'log'}):\n{_text(exc.stdout)[-4000:]}\n"
                f"{_text(exc.stderr)[-4000:]}",
                pytrace=False,
            )
        if done.returncode != 0:
            pytest.fail(
                f"minicloud up failed ({done.returncode}); to try by hand: {MINICLOUD} "
                f"--state-dir {self.state_dir} up --sites 2\n{done.stdout[-4000:]}\n"
                f"{done.stderr[-6000:]}",
                pytrace=False,
            )

    def pid_of(self, service: str) -> int:
        return int(self._pidfile(service)["pid"])

    def port_of(self, service: str) -> int:
        return int(self._pidfile(service)["port"])

    def _pidfile(self, service: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state_dir / "run" / f"{service}.pid").read_text())
        return data


async def wait_for(check: Callable[[], Any], *, within: float = 90.0, interval: float = 1.0) -> Any:
    """Await ``check()`` until it returns something truthy, or fail after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(interval)


async def until_settled(drv: OpenStackDriver, kind: str, name: str) -> models.ObjectStatus:
    async def settled() -> models.ObjectStatus | None:
        status = await drv.observe(kind, name)
        assert status is not None, f"{kind} {name} vanished"
        return None if status.state is models.ObjectState.PENDING else status

    # server ACTIVE takes 2-20 s here, minutes when other test runs load the machine
    result: models.ObjectStatus = await wait_for(settled, within=SETTLE_WITHIN)
    return result
