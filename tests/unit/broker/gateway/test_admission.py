"""Admission control: at most ``limit`` streams opening, the rest told when to come back."""

from __future__ import annotations

import collections
import random

import pytest

from broker.gateway.admission import Admission


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


def measured(adm: Admission, clock: Clock, took: float, n: int = 50) -> None:
    """``n`` openings of ``took`` seconds each, one after the other."""
    for _ in range(n):
        ticket = adm.enter()
        assert ticket is not None
        clock.now += took
        ticket.done(opened=True)


def test_retry_after_queues_the_refused_at_the_measured_opening_rate() -> None:
    """10 places, 0.1 s an opening: 100 openings/s, so 1,000 refused come back spread
    evenly over the 10 s the replica needs for them, after ``least``."""
    adm, clock = admission(limit=10, least=1.0, most=30.0)
    measured(adm, clock, took=0.1)
    assert adm.rate == pytest.approx(100.0, rel=0.01)
    held = [adm.enter() for _ in range(10)]
    assert all(t is not None for t in held)
    for _ in range(1000):
        assert adm.enter() is None
    delays = [adm.retry_after() for _ in range(1000)]
    assert min(delays) >= 1.0
    assert max(delays) == pytest.approx(11.0, abs=0.02)  # least + 1,000 / 100 per s
    # evenly: each second of the queue gets its ~100 agents back, no second twice that
    per_second = collections.Counter(int(d) for d in delays)
    assert all(90 <= per_second[s] <= 110 for s in range(1, 11)), per_second


def test_a_faster_replica_hands_out_a_shorter_queue() -> None:
    slow, slow_clock = admission(limit=4, least=0.5, most=30.0)
    fast, fast_clock = admission(limit=4, least=0.5, most=30.0)
    measured(slow, slow_clock, took=0.2)
    measured(fast, fast_clock, took=0.02)
    assert max(fast.retry_after() for _ in range(100)) < max(
        slow.retry_after() for _ in range(100)
    )


def test_the_queue_is_gone_once_its_time_has_passed() -> None:
    adm, clock = admission(limit=1, least=1.0, most=30.0)
    measured(adm, clock, took=0.1)  # 10 per s
    assert max(adm.retry_after() for _ in range(100)) == pytest.approx(11.0, abs=0.11)
    clock.now += 20.0
    assert all(1.0 <= adm.retry_after() <= 1.1 for _ in range(1))


def test_retry_after_never_exceeds_most() -> None:
    adm, _ = admission(limit=1, least=1.0, most=3.0)
    assert adm.enter() is not None
    for _ in range(100_000):
        adm.enter()
    delays = [adm.retry_after() for _ in range(500)]
    assert max(delays) <= 3.0
    # beyond the horizon: spread between most / 2 and most, not all on one instant
    assert len({round(d, 3) for d in delays if d >= 1.5}) > 100


@pytest.mark.parametrize(("limit", "least", "most"), [(0, 1.0, 2.0), (1, 0.0, 2.0), (1, 3.0, 2.0)])
def test_nonsense_bounds_are_refused(limit: int, least: float, most: float) -> None:
    with pytest.raises(ValueError, match="admission needs"):
        Admission(limit, least, most)
