"""Admission control for agent streams: a bound on how many one replica opens at once.

Opening a stream (read Hello, check the site, record the session and inventory in etcd,
send Welcome and the desired snapshot) is the costly part of a stream's life; holding it
afterwards is cheap. When every agent dials at once (a replica restart, a network coming
back), opening them all together starves the replica's event loop and its etcd pool --
where the election and replica-lease keepalives must keep running -- and the agents time
out and dial again as the same herd.

The invariant kept here: at most ``limit`` streams are opening on this replica at any
moment. Every other arrival is refused at once (cheap: no etcd, nothing written) and told
when to come back: the next free slot of a virtual queue that drains at the rate this
replica opens streams (``limit`` over the mean time an opening takes, measured), so a
herd of refused agents comes back spread over exactly the time the replica needs for
them -- not sooner (another round of TLS handshakes to refuse) and not later (idle
capacity while agents wait). The queue starts ``least`` from now; each delay is
jittered within its slot's width; a refusal whose slot would lie beyond ``most`` is told
a delay between ``most / 2`` (never below ``least``) and ``most`` and takes no slot (it
is given one when it comes back).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

SMOOTHING = 0.2  # weight of the newest opening in the mean opening time
FIRST_GUESS = 0.05
"""Seconds an opening is assumed to take until one is measured. A herd is refused in its
first instant, before anything is measured: a guess too slow queues it for minutes
behind a replica that opens hundreds a second (what a replica with a local etcd does);
a guess too fast costs only a second refusal, which then gets a slot at the measured
rate."""


class Ticket:
    """One admitted opening; ``done`` frees its place (once, whatever happens)."""

    __slots__ = ("_admission", "_done", "_since")

    def __init__(self, admission: Admission, since: float) -> None:
        self._admission = admission
        self._done = False
        self._since = since

    def done(self, *, opened: bool) -> None:
        if not self._done:
            self._done = True
            self._admission._leave(opened, self._since)


class Admission:
    """Counts streams opening on this replica; refuses beyond ``limit``."""

    def __init__(
        self,
        limit: int,
        least: float,
        most: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if limit < 1 or least <= 0 or most < least:
            raise ValueError(f"admission needs limit >= 1, 0 < least <= most: {limit, least, most}")
        self.limit = limit
        self.least = least
        self.most = most
        self._clock = clock
        self._rng = rng or random.Random()
        self._opening = 0
        self._open_time = FIRST_GUESS
        self._slot = 0.0  # the last slot handed out (monotonic time)
        self.refused_total = 0
        self.opened_total = 0

    @property
    def opening(self) -> int:
        """Streams opening right now."""
        return self._opening

    def enter(self) -> Ticket | None:
        """A ticket if a place is free; None (and the refusal counted) if not."""
        if self._opening >= self.limit:
            self.refused_total += 1
            return None
        self._opening += 1
        return Ticket(self, self._clock())

    def _leave(self, opened: bool, since: float) -> None:
        self._opening -= 1
        if opened:
            self.opened_total += 1
            took = max(self._clock() - since, 1e-4)
            self._open_time += SMOOTHING * (took - self._open_time)

    @property
    def rate(self) -> float:
        """Streams this replica opens per second when every place is taken (measured)."""
        return self.limit / self._open_time

    def retry_after(self) -> float:
        """Seconds a refused stream should wait: its jittered slot in the virtual queue."""
        now = self._clock()
        width = 1.0 / self.rate
        slot = max(self._slot, now + self.least) + width
        if slot - now > self.most:
            return self._rng.uniform(max(self.least, self.most / 2), self.most)
        self._slot = slot
        return min(self.most, slot - now - self._rng.uniform(0, width))
