"""A real local federation per test module: etcd, 3 broker processes, agent processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.devfed.federation import Federation

SITES = [f"site-{i:03d}" for i in range(1, 7)]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.etcd)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    fed = Federation(
        state=Path(tmp_path_factory.mktemp("federation")),
        brokers=3,
        heartbeat_interval=0.5,
        down_after=3.0,
    )
    try:
        fed.up(SITES, per_process=1)
        states = fed.wait_all_up(SITES, timeout=90)
        assert all(states.get(s) == "UP" for s in SITES), f"not all sites came UP: {states}"
        yield fed
    finally:
        fed.down()
