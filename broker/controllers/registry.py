"""Where controllers register themselves: a name, a factory, and where they run.

Each controller module ends with one ``@registry.controller(...)`` factory; importing
``broker.controllers`` imports them all, so the registry is complete. ``running.py`` starts
``leader()`` entries for every term it leads (and stops them when the term ends) and
``every_replica()`` entries for the replica's whole life; it lists no controller itself.
A new controller is one module and its registration line.

Invariant: a name is registered once (a second registration fails at import), so two
features cannot start the same loop twice.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from broker import errors
from broker.controllers.lane import Lane
from broker.settings import BrokerSettings
from broker.store.protocol import Store

if TYPE_CHECKING:
    from broker.controllers.quotasync import QuotaMetrics
    from broker.placement.snapshot import Live
    from broker.quotas.headroom import Headroom


class Runnable(Protocol):
    def run(self) -> Coroutine[Any, Any, None]: ...


@dataclass(frozen=True, slots=True)
class Context:
    """What a factory may use: the replica's store, settings and shared seams."""

    store: Store
    settings: BrokerSettings
    fence: int
    """The leader key's revision of this term (0 for every-replica controllers)."""
    headroom: Headroom
    snapshot: Live | None = None
    quota_metrics: QuotaMetrics | None = None
    lane: Lane = field(default_factory=Lane)
    """The term's priority lane: DOWN verdicts and promotions ahead of the rest."""


Factory = Callable[[Context], Runnable]


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    factory: Factory
    leader_only: bool = True


_ENTRIES: dict[str, Entry] = {}


def controller(name: str, *, leader_only: bool = True) -> Callable[[Factory], Factory]:
    """Register the decorated factory as controller ``name``."""

    def register(factory: Factory) -> Factory:
        if name in _ENTRIES:
            raise errors.AlreadyExists("controller", name)
        _ENTRIES[name] = Entry(name, factory, leader_only)
        return factory

    return register


def leader() -> list[Entry]:
    """What the leader runs, in registration order."""
    return [e for e in _ENTRIES.values() if e.leader_only]


def every_replica() -> list[Entry]:
    return [e for e in _ENTRIES.values() if not e.leader_only]
