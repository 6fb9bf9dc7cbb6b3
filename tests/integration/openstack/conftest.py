"""The openstack tier: two real minicloud sites per run, started here or reused.

``minicloud`` runs ``deploy/minicloud/minicloud up --sites 2`` on a state dir under the
repository's ``.state/`` (``$MINICLOUD_STATE`` to point at another one) — a no-op when it
is already up — and FAILS with the log tail when it cannot start; it never skips. The
minicloud is left running for the next run (``minicloud down`` stops it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.minicloud import CLOUD, REPO, Minicloud

from siteagent import models
from siteagent.drivers import base
from siteagent.drivers.openstack import OpenStackDriver
from siteagent.drivers.openstack_support import connect


@pytest.fixture(scope="session")
def minicloud() -> Minicloud:
    state = Path(os.environ.get("MINICLOUD_STATE", REPO / ".state/minicloud-openstack-tier"))
    cloud = Minicloud(state, state / "clouds.yaml")
    cloud.up()
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(cloud.clouds_yaml)
    return cloud


@pytest.fixture
def site() -> str:
    """A site id of its own per test, so names never collide between tests or runs."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def conn(minicloud: Minicloud) -> Iterator[Any]:
    """A plain openstacksdk connection, to check what the driver did from the outside."""
    connection = connect(cloud=CLOUD)
    yield connection
    connection.close()


@pytest.fixture
async def driver(minicloud: Minicloud, site: str) -> AsyncIterator[OpenStackDriver]:
    drv = OpenStackDriver(site, CLOUD, timeout=60.0)
    created: list[tuple[str, str]] = []
    original = drv.apply

    async def tracking_apply(obj: models.DesiredObject) -> models.ObjectStatus:
        if (obj.kind, obj.name) not in created:
            created.append((obj.kind, obj.name))
        return await original(obj)

    drv.apply = tracking_apply  # type: ignore[method-assign]
    yield drv
    # clean up whatever a failing test left behind, dependency order
    for kind, name in sorted(created, key=lambda kn: base.DELETE_ORDER[kn[0]]):
        try:
            await drv.delete(kind, name)
        except Exception as exc:  # best effort: the test has already reported
            print(f"cleanup of {kind} {name} failed: {exc}")
    await drv.close()
