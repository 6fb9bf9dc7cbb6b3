"""A real local federation for end-to-end tests: started, checked UP, always stopped."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from broker.devfed.federation import Federation


@contextlib.contextmanager
def running_federation(state: Path, sites: list[str], **settings: Any) -> Iterator[Federation]:
    """etcd, 3 brokers and one agent process per site, all UP; everything stopped after."""
    fed = Federation(state=state, brokers=3, heartbeat_interval=0.5, down_after=3.0, **settings)
    try:
        fed.up(sites, per_process=1)
        states = fed.wait_all_up(sites, timeout=90)
        assert all(states.get(s) == "UP" for s in sites), f"not all sites came UP: {states}"
        yield fed
    finally:
        fed.down()
