"""Events: timestamped facts the federation wants operators to see (``events/<id>``)."""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass

_SEQUENCE = itertools.count()  # orders one process's events stamped in the same ms


@dataclass(frozen=True, slots=True)
class Event:
    id: str  # sortable: zero-padded unix ms, this process's sequence, a random suffix
    at_ms: int
    kind: str  # e.g. "site.down", "site.up", "pki.revoked"
    subject: str  # what the event is about, e.g. a site id
    message: str
    replica: str = ""


def new(kind: str, subject: str, message: str, *, replica: str = "", at_ms: int = 0) -> Event:
    """A new event stamped now (or at ``at_ms``), with a sortable, unique id."""
    at = at_ms or int(time.time() * 1000)
    return Event(
        id=f"{at:013d}-{next(_SEQUENCE) % 16**8:08x}{secrets.token_hex(2)}",
        at_ms=at,
        kind=kind,
        subject=subject,
        message=message,
        replica=replica,
    )
