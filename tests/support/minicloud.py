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


@dataclass(frozen=True)
class Minicloud:
    state_dir: Path
    clouds_yaml: Path

    def run(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MINICLOUD), "--state-dir", str(self.state_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def up(self) -> None:
        done = self.run("up", "--sites", "1", "--quiet")
        if done.returncode != 0:
            pytest.fail(
                f"minicloud up failed ({done.returncode}):\n{done.stdout[-4000:]}\n"
                f"{done.stderr[-4000:]}",
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

    result: models.ObjectStatus = await wait_for(settled)
    return result
