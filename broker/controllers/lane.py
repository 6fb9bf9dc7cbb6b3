"""The leader's priority lane: DOWN verdicts and promotions before anything else.

A site lost at full size hands the leader three kinds of work at once: the site's DOWN
verdict (site health), the promotions of the standbys of the actives it held (failover),
and the re-placements that restore redundancy (failover's replacer) — besides the
background work that never stops (the survivability report). They share one event loop
and one etcd client. Restoring is allowed a minute; a promotion is allowed a second and a
half from the loss. So urgent work *holds* the lane while it is pending (``hold`` a key,
``release`` it once written or no longer wanted), and background work waits for the lane
to be clear (``clear``) before it starts a piece — a re-placement, a batch of steps, a
report — so it is never ahead of a verdict or a promotion.

A hold lapses after ``hold_s`` (a promotion whose standby's agent never reports must not
stall every restore): urgent work that outlives it is only no longer ahead of the rest.

Invariant: while a hold younger than ``hold_s`` is pending, ``clear`` does not return.
One ``Lane`` per leadership term (``registry.Context``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

HOLD_S = 10.0
"""How long one urgent piece of work may keep the background waiting."""


class Lane:
    def __init__(
        self, *, hold_s: float = HOLD_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.hold_s, self.clock = hold_s, clock
        self._held: dict[str, float] = {}
        """Urgent work pending → since when (``clock``)."""
        self._changed = asyncio.Event()
        self.waited = 0
        """Times background work found the lane held and waited (tests, diagnostics)."""

    def hold(self, key: str) -> None:
        """Urgent work ``key`` is pending (a second hold keeps the first one's age)."""
        self._held.setdefault(key, self.clock())

    def release(self, key: str) -> None:
        if self._held.pop(key, None) is not None:
            self._changed.set()

    def holds(self, key: str) -> bool:
        """Whether ``key`` is held and not lapsed."""
        since = self._held.get(key)
        return since is not None and self.clock() - since < self.hold_s

    def pending(self) -> bool:
        """Whether any urgent work is pending (lapsed holds are dropped here)."""
        now = self.clock()
        for key, since in list(self._held.items()):
            if now - since >= self.hold_s:
                del self._held[key]
        return bool(self._held)

    async def clear(self) -> None:
        """Return once no urgent work is pending (at once when none is)."""
        if not self.pending():
            return
        self.waited += 1
        while self.pending():
            self._changed.clear()
            lapse = min(self._held.values()) + self.hold_s - self.clock()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, lapse)):
                    await self._changed.wait()
