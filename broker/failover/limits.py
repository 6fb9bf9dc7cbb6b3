"""The order and the bounds of re-placements: priority first, then the oldest loss.

``Recoveries`` holds the re-placements the failover machines asked for. ``next`` hands
out the most urgent one whose target is open, at most ``total`` under way federation-wide
and ``per_site`` per target site (settings ``failover.max_replacements`` and
``failover.max_per_site``, 32 and 4 by default), so a site holding hundreds of VNFs
going down never stalls the controllers or floods one surviving site.

Invariant: ``running()`` never exceeds ``total``, nor any site's count ``per_site``; a
VNF of higher ``priority`` is never passed over for a lower one that fits the same slot.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, order=True)
class Request:
    """One re-placement: ordered by priority (higher first), then by when it was asked."""

    sort_key: tuple[int, int, str, str] = field(init=False, repr=False)
    vnf: str = field(compare=False)
    member: str = field(compare=False)
    priority: int = field(default=0, compare=False)
    asked_ms: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sort_key", (-self.priority, self.asked_ms, self.vnf, self.member))


class Recoveries:
    """Queued and running re-placements, under both limits."""

    def __init__(self, total: int = 32, per_site: int = 4) -> None:
        if total < 1 or per_site < 1:
            raise ValueError("limits must be at least 1")
        self.total, self.per_site = total, per_site
        self._queue: list[Request] = []
        self._queued: set[tuple[str, str]] = set()
        self._running: dict[tuple[str, str], str] = {}
        """(vnf, member) → the target site it holds a slot at ("" until chosen)."""
        self._at_site: dict[str, int] = {}
        self.peak = 0

    def ask(self, request: Request) -> None:
        key = (request.vnf, request.member)
        if key in self._queued or key in self._running:
            return
        self._queued.add(key)
        heapq.heappush(self._queue, request)

    def cancel(self, vnf: str, member: str) -> None:
        self._queued.discard((vnf, member))

    def forget(self, vnf: str) -> None:
        """The VNF is gone or no longer followed: drop its requests, free its slots."""
        for key in [k for k in (*self._queued, *self._running) if k[0] == vnf]:
            self.cancel(*key)
            self.finish(*key)

    def next(self) -> Request | None:
        """The most urgent queued request, if a federation-wide slot is free."""
        while self._queue and len(self._running) < self.total:
            request = heapq.heappop(self._queue)
            key = (request.vnf, request.member)
            if key not in self._queued:
                continue  # cancelled
            self._queued.discard(key)
            self._running[key] = ""
            self.peak = max(self.peak, len(self._running))
            return request
        return None

    def site_open(self, site: str) -> bool:
        return self._at_site.get(site, 0) < self.per_site

    def open_sites(self, sites: list[str]) -> list[str]:
        """The sites among ``sites`` that may take one more re-placement."""
        return [s for s in sites if self.site_open(s)]

    def target(self, vnf: str, member: str, site: str) -> bool:
        """Hold a slot at ``site`` for a running request; ``False`` when the site is full."""
        key = (vnf, member)
        if key not in self._running or not self.site_open(site):
            return False
        previous = self._running[key]
        if previous:
            self._at_site[previous] -= 1
        self._running[key] = site
        self._at_site[site] = self._at_site.get(site, 0) + 1
        return True

    def finish(self, vnf: str, member: str) -> None:
        """The request ended (placed READY, failed, or gave up): free its slots."""
        site = self._running.pop((vnf, member), None)
        if site:
            self._at_site[site] -= 1

    def requeue(self, request: Request) -> None:
        """A running request found no open target: back into the queue, slots freed."""
        self.finish(request.vnf, request.member)
        self.ask(request)

    def running(self) -> int:
        return len(self._running)

    def at_site(self, site: str) -> int:
        return self._at_site.get(site, 0)

    def queued(self) -> int:
        return len(self._queued)
