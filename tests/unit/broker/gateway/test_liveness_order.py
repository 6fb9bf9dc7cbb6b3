"""Liveness judges silence by walking its sessions least recently heard first, and stops
at the first one heard within the bound: a sweep costs the sessions that flip."""

from __future__ import annotations

import time

from broker.gateway.liveness import Liveness
from broker.gateway.sessions import Registry, Session
from broker.settings import BrokerSettings, HealthSettings
from broker.store.memory import MemoryStore
from tests.support.gateway import gateway_on


def session(site: str) -> Session:
    s = Session(site, f"id-{site}", 1, "1.1", "test", 0)
    s.status_value = b"{}"  # its opening record is written
    return s


def liveness(down_after: float = 3.0) -> Liveness:
    settings = BrokerSettings(health=HealthSettings(down_after=down_after))
    gateway = gateway_on(MemoryStore(), settings)
    return Liveness(MemoryStore(), settings, Registry(), gateway.lease, gateway._clear_status)


def test_the_silent_flip_and_the_heard_again_flip_back() -> None:
    live = liveness()
    a, b, c = session("a"), session("b"), session("c")
    for s in (a, b, c):
        live.track(s)
    now = time.monotonic()
    a.last_seen = b.last_seen = now - 10
    live.heard(c, 7)
    assert live.flips() == [(a, True), (b, True)]
    a.silent = b.silent = True  # as their records now say
    assert live.flips() == []  # told already: no second write
    live.heard(a, 8)
    assert live.wake.is_set() and live.flips() == [(a, False)]


def test_the_walk_stops_at_the_first_session_heard_within_the_bound() -> None:
    """Everything behind a recently heard session was heard later still: never looked
    at. (A stale time planted behind it proves the walk did not go there.)"""
    live = liveness()
    old, recent, behind = session("old"), session("recent"), session("behind")
    for s in (old, recent, behind):
        live.track(s)
    now = time.monotonic()
    old.last_seen = now - 10
    recent.last_seen = now
    behind.last_seen = now - 10  # impossible in the order: only to see the walk stop
    assert live.flips() == [(old, True)]


def test_an_ended_session_is_not_judged() -> None:
    live = liveness()
    gone = session("gone")
    live.track(gone)
    live.forget(gone)
    gone.last_seen = time.monotonic() - 10
    live.heard(gone, 1)  # a late heartbeat of an ended stream changes nothing
    gone.last_seen = time.monotonic() - 10
    assert live.flips() == [] and not live.wake.is_set()
