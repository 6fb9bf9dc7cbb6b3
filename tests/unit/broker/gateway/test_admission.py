"""Admission control: at most ``limit`` streams opening, the rest told when to come back."""

from __future__ import annotations

import random

import pytest

from broker.gateway.admission import WINDOW, Admission


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admission(limit: int = 2, least: float = 1.0, most: float = 30.0) -> tuple[Admission, Clock]:
    clock = Clock()
    return Admission(limit, least, most, clock=clock, rng=random.Random(7)), clock


def test_bounds_the_streams_opening_at_once() -> None:
    adm, _ = admission(limit=2)
    first, second = adm.enter(), adm.enter()
    assert first is not None and second is not None
    assert adm.enter() is None and adm.opening == 2 and adm.refused_total == 1
    first.done(opened=True)
    first.done(opened=False)  # a ticket frees its place once, however often it is done
    assert adm.opening == 1 and adm.opened_total == 1
    third = adm.enter()
    assert third is not None and adm.opening == 2
    second.done(opened=False)  # a refused or failed opening frees its place too
    third.done(opened=False)
    assert adm.opening == 0 and adm.opened_total == 1


def test_retry_after_is_jittered_within_bounds() -> None:
    adm, _ = admission(limit=1, least=1.0, most=30.0)
    assert adm.enter() is not None
    for _ in range(200):
        assert adm.enter() is None
    delays = [adm.retry_after() for _ in range(200)]
    assert all(1.0 <= d <= 30.0 for d in delays)
    assert len({round(d, 3) for d in delays}) > 150, "refused agents must not get one delay"


def test_retry_after_spreads_over_the_backlogs_drain_time() -> None:
    """1,000 refused at 100 openings/s: they should come back over ~10 s, not 1 s."""
    adm, clock = admission(limit=10, least=1.0, most=30.0)
    for _ in range(int(WINDOW * 100)):  # 100 openings a second over the window
        ticket = adm.enter()
        assert ticket is not None
        ticket.done(opened=True)
        clock.now += 0.01
    held = [adm.enter() for _ in range(10)]
    for _ in range(1000):
        assert adm.enter() is None
    delays = sorted(adm.retry_after() for _ in range(1000))
    assert delays[-1] == pytest.approx(10.0, abs=0.5)  # 1,000 / 100 per s
    assert delays[len(delays) // 2] == pytest.approx(5.5, abs=1.0)
    # refusals older than the window no longer count: the backlog is gone
    clock.now += WINDOW + 1
    assert all(1.0 <= adm.retry_after() <= 1.0 for _ in range(10))
    assert all(t is not None for t in held)


def test_retry_after_never_exceeds_most() -> None:
    adm, _ = admission(limit=1, least=1.0, most=3.0)
    assert adm.enter() is not None
    for _ in range(100_000):
        adm.enter()
    assert max(adm.retry_after() for _ in range(500)) <= 3.0


@pytest.mark.parametrize(("limit", "least", "most"), [(0, 1.0, 2.0), (1, 0.0, 2.0), (1, 3.0, 2.0)])
def test_nonsense_bounds_are_refused(limit: int, least: float, most: float) -> None:
    with pytest.raises(ValueError, match="admission needs"):
        Admission(limit, least, most)
