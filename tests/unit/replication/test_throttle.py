"""The bandwidth cap on a driven clock."""

from __future__ import annotations

import asyncio

import pytest

from replication import errors
from replication.throttle import Throttle, check_window, parse_window


class Clock:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


@pytest.mark.parametrize(
    ("rate", "burst", "sends", "elapsed"),
    [
        (100.0, 100, [100], 0.0),  # the burst goes at once
        (100.0, 100, [100, 100], 1.0),
        (100.0, 100, [50] * 10, 4.0),
        (1000.0, 10, [500], 0.49),
        (10.0, 10, [10, 10, 10, 10], 3.0),
    ],
)
async def test_rate_is_held(rate: float, burst: int, sends: list[int], elapsed: float) -> None:
    c = Clock()
    t = Throttle(rate, burst=burst, clock=c.now, sleep=c.sleep)
    for n in sends:
        await t.take(n)
    assert c.t == pytest.approx(elapsed)
    assert sum(sends) <= rate * c.t + burst + 1e-9


async def test_shared_by_concurrent_streams() -> None:
    c = Clock()
    t = Throttle(100.0, burst=100, clock=c.now, sleep=c.sleep)
    await asyncio.gather(*(t.take(50) for _ in range(8)))
    assert c.t == pytest.approx(3.0)


async def test_idle_time_refills_only_up_to_the_burst() -> None:
    c = Clock()
    t = Throttle(100.0, burst=100, clock=c.now, sleep=c.sleep)
    c.t = 60.0
    await t.take(300)
    assert c.t == pytest.approx(62.0)


async def test_a_late_wake_up_is_credited_not_lost() -> None:
    """On a busy machine every sleep overshoots; the cap still runs at its rate (only the
    last overshoot shows), where dropping each overshoot slowed the link at every chunk."""
    c = Clock()

    async def late(s: float) -> None:
        c.slept.append(s)
        c.t += s + 0.3

    t = Throttle(100.0, burst=100, clock=c.now, sleep=late)
    for _ in range(11):
        await t.take(100)
    assert c.t == pytest.approx(10.3)
    assert 1100 <= 100.0 * c.t + 100


def test_cap_must_be_positive() -> None:
    with pytest.raises(errors.InvalidImage):
        Throttle(0)


async def test_a_download_cap_paces_what_a_site_receives_from_every_source() -> None:
    from replication.catalog import ImageId
    from replication.store import MemoryBytes
    from replication.throttle import Throttled

    c = Clock()
    t = Throttle(100.0, burst=100, clock=c.now, sleep=c.sleep)
    a, b = MemoryBytes(), MemoryBytes()
    a.put(ImageId("x"), b"a" * 300)
    b.put(ImageId("y"), b"b" * 200)
    got = [ch async for ch in Throttled(a, t).chunks(ImageId("x"), 0, 100)]
    got += [ch async for ch in Throttled(b, t).chunks(ImageId("y"), 0, 100)]
    assert b"".join(ch.data for ch in got) == b"a" * 300 + b"b" * 200
    assert c.t == pytest.approx(4.0)  # 500 bytes at 100/s, the first 100 from the burst


@pytest.mark.parametrize(
    ("text", "minute", "rate"),
    [
        ("22:00-06:00=50", 23 * 60, 50.0),  # wraps past midnight
        ("22:00-06:00=50", 5 * 60 + 59, 50.0),
        ("22:00-06:00=50", 6 * 60, 1000.0),  # the end is outside: the base rate
        ("09:30-17:00=20.5", 12 * 60, 20.5),
        ("09:30-17:00=20.5", 9 * 60 + 29, 1000.0),
    ],
)
async def test_a_time_window_sets_the_rate_in_force(text: str, minute: int, rate: float) -> None:
    c = Clock()
    wall = minute * 60.0 + 86_400 * 3  # some day, that minute, UTC
    t = Throttle(
        1000.0,
        burst=10,
        clock=c.now,
        sleep=c.sleep,
        windows=[parse_window(text)],
        wall=lambda: wall,
    )
    assert t.rate_now() == rate
    await t.take(10)
    await t.take(10)
    assert c.t == pytest.approx(10 / rate)


async def test_no_base_cap_outside_the_windows() -> None:
    c = Clock()
    t = Throttle(
        float("inf"),
        clock=c.now,
        sleep=c.sleep,
        windows=[parse_window("00:00-01:00=5")],
        wall=lambda: 2 * 3600.0,
    )
    for _ in range(100):
        await t.take(1 << 20)
    assert c.slept == []


@pytest.mark.parametrize(
    "text", ["22:00-06:00", "24:00-01:00=5", "10:00-10:00=5", "10:00-11:00=0", "10-11=5", ""]
)
def test_a_bad_window_is_refused_saying_how_to_write_it(text: str) -> None:
    with pytest.raises(errors.InvalidImage, match="window"):
        parse_window(text)
    with pytest.raises(ValueError):
        check_window(text)
