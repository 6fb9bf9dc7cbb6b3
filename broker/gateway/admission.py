"""Admission control for agent streams: a bound on how many one replica opens at once.

Opening a stream (read Hello, check the site, record the session and inventory in etcd,
send Welcome and the desired snapshot) is the costly part of a stream's life; holding it
afterwards is cheap. When every agent dials at once (a replica restart, a network coming
back), opening them all together starves the replica's event loop and its etcd pool --
where the election and replica-lease keepalives must keep running -- and the agents time
out and dial again as the same herd.

The invariant kept here: at most ``limit`` streams are opening on this replica at any
moment. Every other arrival is refused at once (cheap: no etcd, nothing written) and told
when to come back: a delay drawn at random between ``least`` and the time the refused
backlog needs at the recent opening rate (capped at ``most``), so the refused return
spread out instead of together.
"""

from __future__ import annotations

import collections
import random
import time
from collections.abc import Callable

WINDOW = 5.0  # seconds of history behind the backlog and rate estimates


class Ticket:
    """One admitted opening; ``done`` frees its place (once, whatever happens)."""

    __slots__ = ("_admission", "_done")

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._done = False

    def done(self, *, opened: bool) -> None:
        if not self._done:
            self._done = True
            self._admission._leave(opened)


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
        self._started = clock()
        self._opened: collections.deque[float] = collections.deque()
        self._refused: collections.deque[float] = collections.deque()
        self.refused_total = 0
        self.opened_total = 0

    @property
    def opening(self) -> int:
        """Streams opening right now."""
        return self._opening

    def enter(self) -> Ticket | None:
        """A ticket if a place is free; None (and the refusal counted) if not."""
        if self._opening >= self.limit:
            self._refused.append(self._clock())
            self.refused_total += 1
            return None
        self._opening += 1
        return Ticket(self)

    def _leave(self, opened: bool) -> None:
        self._opening -= 1
        if opened:
            self._opened.append(self._clock())
            self.opened_total += 1

    def retry_after(self) -> float:
        """Seconds a refused stream should wait: jittered over the backlog's drain time."""
        now = self._clock()
        for times in (self._opened, self._refused):
            while times and times[0] < now - WINDOW:
                times.popleft()
        seen = min(WINDOW, max(now - self._started, self.least))
        # With no opening seen lately, assume the replica opens `limit` per `least`.
        rate = len(self._opened) / seen if self._opened else self.limit / self.least
        drain = len(self._refused) / rate
        upper = min(self.most, max(self.least, drain))
        return self._rng.uniform(self.least, upper)
