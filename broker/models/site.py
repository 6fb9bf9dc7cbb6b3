"""Sites: what an operator registers, what the gateway sees, what site health decides."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NewType

SiteId = NewType("SiteId", str)


@dataclass(frozen=True, slots=True)
class Geo:
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class SiteSpec:
    """A registered site (``sites/<id>``), written by the API."""

    id: str
    region: str
    zone: str = ""
    failure_domains: dict[str, str] = field(default_factory=dict)
    geo: Geo | None = None
    labels: dict[str, str] = field(default_factory=dict)
    registered_ms: int = 0


@dataclass(frozen=True, slots=True)
class SiteStatus:
    """The live session of a site (``sitestatus/<id>``), written by the gateway, leased.

    Written when the session opens and when the replica holding it judges it silent or
    heard again (``silent_since_ms``), never per heartbeat; absent when no replica holds a
    stream for the site.
    """

    site: str
    replica: str
    session_id: str
    protocol: str
    agent_version: str
    connected_ms: int
    last_heartbeat_ms: int  # the last heartbeat heard when the record was written
    heartbeat_seq: int = 0
    silent_since_ms: int = 0  # no heartbeat since then (> health.down_after); 0: alive


class Health(enum.StrEnum):
    UNKNOWN = "UNKNOWN"
    UP = "UP"
    DOWN = "DOWN"


@dataclass(frozen=True, slots=True)
class SiteHealth:
    """The site health controller's verdict (``health/<id>``), fenced."""

    site: str
    state: Health
    since_ms: int
    reason: str = ""
    decided_by: str = ""  # the replica that was leader
    fence: int = 0  # that leader's fencing revision
