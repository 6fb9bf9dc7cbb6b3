"""A per-site bandwidth cap: a token bucket shared by every stream a site serves (or, as
``Throttled``, every copy it receives: one cap per direction of a site's link).

Operators may also cap per time of day: ``Window``s (``"22:00-06:00=52428800"``: from
22:00 to 06:00 UTC, 50 MiB/s) override the base rate while the wall clock is inside them;
a base rate of ``inf`` means no cap outside the windows.

Invariant: over any window longer than ``burst / rate`` seconds, the bytes let through
do not exceed ``rate`` per second plus one ``burst`` — however many streams share it,
``rate`` being the one in force. The clocks and the sleep are injectable so the
arithmetic is tested without waiting.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from replication import errors
from replication.catalog import ImageId
from replication.transfer import ByteSource, Chunk


_WINDOW = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)=(\d+(?:\.\d+)?)")


@dataclass(frozen=True, slots=True)
class Window:
    """``rate`` bytes/s from minute ``start`` to minute ``end`` of the UTC day (wrapping
    past midnight when ``end <= start``)."""

    start: int
    end: int
    rate: float

    def covers(self, minute: int) -> bool:
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def parse_window(text: str) -> Window:
    """``"HH:MM-HH:MM=<bytes/s>"`` (UTC), or ``InvalidImage`` saying what is wrong."""
    m = _WINDOW.fullmatch(text.strip())
    if m is None:
        raise errors.InvalidImage("window", f"{text!r} is not HH:MM-HH:MM=<bytes/s> (UTC)")
    h1, m1, h2, m2 = (int(g) for g in m.groups()[:4])
    rate = float(m.group(5))
    if rate <= 0 or (h1, m1) == (h2, m2):
        raise errors.InvalidImage("window", f"{text!r}: a window needs a length and a rate > 0")
    return Window(h1 * 60 + m1, h2 * 60 + m2, rate)


def check_window(text: str) -> str:
    """``parse_window`` for a settings validator (``ValueError`` with the reason)."""
    try:
        parse_window(text)
    except errors.InvalidImage as exc:
        raise ValueError(str(exc)) from exc
    return text


class Throttle:
    """``await take(n)`` before sending ``n`` bytes."""

    def __init__(
        self,
        rate: float,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        windows: Sequence[Window] = (),
        wall: Callable[[], float] = time.time,
    ) -> None:
        if rate <= 0:
            raise errors.InvalidImage("bandwidth", "a cap must be > 0 bytes/s")
        self.rate = rate
        self.windows, self._wall = tuple(windows), wall
        finite = [r for r in (rate, *(w.rate for w in self.windows)) if not math.isinf(r)]
        self.burst = float(burst if burst is not None else max(int(max(finite, default=1)), 1))
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._at = clock()
        self._lock = asyncio.Lock()

    def rate_now(self) -> float:
        """The cap in force: the first window the UTC time of day is in, else ``rate``."""
        minute = int(self._wall() // 60) % (24 * 60)
        return next((w.rate for w in self.windows if w.covers(minute)), self.rate)

    async def take(self, n: int) -> None:
        rate = self.rate_now()
        if math.isinf(rate):
            return
        async with self._lock:  # first come, first served across streams
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * rate)
            self._at = now
            self._tokens -= n
            if self._tokens < 0:
                # the debt is slept off; the bucket keeps counting from before the sleep,
                # so a late wake-up (a busy machine) is credited at the next take instead
                # of lost — resetting here ran a shaped link at half its cap under load
                await self._sleep(-self._tokens / rate)


class Throttled:
    """``source`` read no faster than ``throttle`` lets through (a site's download cap)."""

    def __init__(self, source: ByteSource, throttle: Throttle) -> None:
        self.source, self.throttle = source, throttle

    async def chunks(self, image: ImageId, offset: int, chunk_size: int) -> AsyncIterator[Chunk]:
        async for c in self.source.chunks(image, offset, chunk_size):
            await self.throttle.take(len(c.data))
            yield c
