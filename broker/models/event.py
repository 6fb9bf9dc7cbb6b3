"""Events: timestamped facts the federation wants operators to see (``events/<id>``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    id: str  # sortable: zero-padded unix ms, then a random suffix
    at_ms: int
    kind: str  # e.g. "site.down", "site.up", "pki.revoked"
    subject: str  # what the event is about, e.g. a site id
    message: str
    replica: str = ""
