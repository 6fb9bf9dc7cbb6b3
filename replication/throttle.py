"""A per-site bandwidth cap: a token bucket shared by every stream a site serves (or, as
``Throttled``, every copy it receives: one cap per direction of a site's link).

Invariant: over any window longer than ``burst / rate`` seconds, the bytes let through
do not exceed ``rate`` per second plus one ``burst`` — however many streams share it.
The clock and the sleep are injectable so the arithmetic is tested without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from replication import errors
from replication.catalog import ImageId
from replication.transfer import ByteSource, Chunk


class Throttle:
    """``await take(n)`` before sending ``n`` bytes."""

    def __init__(
        self,
        rate: float,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise errors.InvalidImage("bandwidth", "a cap must be > 0 bytes/s")
        self.rate = rate
        self.burst = float(burst if burst is not None else max(int(rate), 1))
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._at = clock()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        async with self._lock:  # first come, first served across streams
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= n
            if self._tokens < 0:
                # a chunk larger than the burst goes through after its own time's worth
                await self._sleep(-self._tokens / self.rate)
                self._tokens = 0.0
                self._at = self._clock()


class Throttled:
    """``source`` read no faster than ``throttle`` lets through (a site's download cap)."""

    def __init__(self, source: ByteSource, throttle: Throttle) -> None:
        self.source, self.throttle = source, throttle

    async def chunks(self, image: ImageId, offset: int, chunk_size: int) -> AsyncIterator[Chunk]:
        async for c in self.source.chunks(image, offset, chunk_size):
            await self.throttle.take(len(c.data))
            yield c
