"""A real local federation for end-to-end tests: started, checked UP, always stopped."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from broker.devfed.federation import Federation


@contextlib.contextmanager
def running_federation(
    state: Path, sites: list[str], brokers: int = 3, **settings: Any
) -> Iterator[Federation]:
    """etcd, ``brokers`` brokers and one agent process per site, all UP; everything
    stopped after."""
    fed = Federation(
        state=state, brokers=brokers, heartbeat_interval=0.5, down_after=3.0, **settings
    )
    try:
        fed.up(sites, per_process=1)
        states = fed.wait_all_up(sites, timeout=90)
        assert all(states.get(s) == "UP" for s in sites), f"not all sites came UP: {states}"
        yield fed
    finally:
        fed.down()


def image_body(image_id: str, data: bytes, **extra: Any) -> dict[str, Any]:
    """A ``POST /v1/images`` body for ``data`` held at site-001 (its digests computed)."""
    return {
        "id": image_id,
        "name": "cirros",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "os_hash_algo": "sha512",
        "os_hash_value": hashlib.sha512(data).hexdigest(),
        "source_site": "site-001",
        **extra,
    }
