"""Lease keepalives on a thread of their own, so a busy event loop cannot lose a lease.

Every lease holder (the election campaign, the gateway's replica lease) refreshes its
lease from the event loop every third of its TTL. Under a connect storm that loop can lag
by more than a TTL -- not because etcd is slow, but because the loop has a second of other
work queued -- and the lease (and with it a leader term, or every live-session record)
runs out although etcd was fine all along. etcd's own Go client avoids this the same way:
keepalives run beside the application, not inside it.

``Keeper`` refreshes each lease from the moment it is granted (a loop busy enough to
miss a TTL may well miss the first refresh too) and while the loop keeps asking about
it, every third of its TTL, on a daemon thread of that lease's own (a slow answer for
one lease never delays another).
The loop's ``refresh_lease`` then answers from the keeper's last success without waiting
for anything, as long as that answer is trustworthy:

- it is the remaining TTL as of the keeper's last *successful* refresh (measured from
  when that refresh was sent), so a caller computing ``now + remaining`` never
  overestimates the lease;
- a failed attempt (etcd slow or unreachable for a moment) does not withdraw it: the
  lease cannot run out before that last success's deadline, so the answer stays true
  while at least ``MIN_CACHED`` of it is left; the keeper retries meanwhile, and only
  when that margin is gone does the caller go to etcd itself and see the failure;
- a lease found gone (expired, revoked) is reported gone at once;
- demand-driven: a lease the loop has not asked about for ``demand_s`` seconds (at
  least ``DEMAND_TTLS`` TTLs; ``DEMAND_SECONDS`` by default) is dropped, so a wedged
  process stops keeping its leases and they expire as they must -- but a loop that was
  merely blocked for a few seconds (a connect storm's TLS handshakes, a slow
  snapshot) finds its leases, and with them a leader term, still there.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Awaitable, Callable

from broker import errors

log = logging.getLogger(__name__)

DEMAND_TTLS = 2.0  # keep a lease while the loop asked within this many TTLs (at least)
DEMAND_SECONDS = 10.0
"""Keep a lease while the loop asked within this many seconds: longer than any stall a
busy replica's loop shows under a herd (seconds), shorter than a wedged one."""
MIN_CACHED = 1.0  # answer from the cache only with at least this much TTL left (s)
IDLE_WAIT = 0.05  # the thread's longest sleep between checks (s)


class Gone(Exception):
    """The keeper found the lease expired or revoked."""


@dataclasses.dataclass
class _Kept:
    ttl: float  # the lease's full TTL as etcd last reported it
    asked: float  # when the loop last asked
    sent: float  # when the last successful refresh was sent
    failures: int = 0  # failed attempts since the last success (diagnostics)
    gone: bool = False
    next_at: float = 0.0


class Keeper:
    """Keeps asked-about leases alive with ``refresh(lease_id) -> ttl`` on its own thread.

    ``refresh`` is synchronous and raises ``Gone`` when the lease no longer exists; any
    other exception is a failed attempt, retried soon.
    """

    def __init__(
        self,
        refresh: Callable[[int], int],
        *,
        clock: Callable[[], float] = time.monotonic,
        demand_s: float = DEMAND_SECONDS,
    ) -> None:
        self._refresh = refresh
        self._clock = clock
        self._demand_s = demand_s
        self._leases: dict[int, _Kept] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: dict[int, threading.Thread] = {}
        self.refreshes = 0  # successful background refreshes (tests, diagnostics)

    def cached(self, lease_id: int) -> int | None:
        """The remaining TTL (whole seconds) if the keeper vouches for it, else None.

        Raises ``Gone`` if the keeper saw the lease disappear. Either way the ask counts
        as demand, which keeps the lease kept.
        """
        now = self._clock()
        with self._lock:
            kept = self._leases.get(lease_id)
            if kept is None:
                return None
            kept.asked = now
            if kept.gone:
                del self._leases[lease_id]
                raise Gone(f"lease {lease_id:x} is gone (expired or revoked)")
            remaining = kept.sent + kept.ttl - now
            if remaining < MIN_CACHED:
                return None
            return int(remaining)

    def keep(self, lease_id: int, ttl: int, sent: float) -> None:
        """The loop refreshed ``lease_id`` itself (sent at ``sent``): keep it from now on."""
        with self._lock:
            if self._stop.is_set():
                return
            kept = self._leases.get(lease_id)
            if kept is None or sent >= kept.sent:
                self._leases[lease_id] = _Kept(
                    ttl=ttl, asked=self._clock(), sent=sent, next_at=sent + ttl / 3
                )
            if lease_id not in self._threads:
                thread = threading.Thread(
                    target=self._run,
                    args=(lease_id,),
                    name=f"meridian-etcd-keepalive-{lease_id:x}",
                    daemon=True,
                )
                self._threads[lease_id] = thread
                thread.start()

    def forget(self, lease_id: int) -> None:
        with self._lock:
            self._leases.pop(lease_id, None)

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            self._leases.clear()

    # -- one thread per kept lease ----------------------------------------------------

    def _next(self, lease_id: int, now: float) -> float | None:
        """Seconds until ``lease_id`` is due (0: now); None: stop keeping it."""
        with self._lock:
            kept = self._leases.get(lease_id)
            if kept is None or kept.gone or self._stop.is_set():
                self._threads.pop(lease_id, None)
                return None
            if now - kept.asked > max(DEMAND_TTLS * kept.ttl, self._demand_s):
                log.info("lease %x no longer asked for: keepalive stopped", lease_id)
                del self._leases[lease_id]
                self._threads.pop(lease_id, None)
                return None
            return max(kept.next_at - now, 0.0)

    def _run(self, lease_id: int) -> None:
        while (wait := self._next(lease_id, self._clock())) is not None:
            if wait > 0:
                self._stop.wait(min(wait, IDLE_WAIT))
                continue
            with self._lock:
                kept = self._leases.get(lease_id)
                ttl = kept.ttl if kept is not None else 0.0
            if ttl:
                self._attempt(lease_id, ttl)

    def _attempt(self, lease_id: int, ttl: float) -> None:
        sent = self._clock()
        try:
            answered = self._refresh(lease_id)
        except Gone:
            self._settle(lease_id, lambda kept: setattr(kept, "gone", True))
            return
        except Exception as exc:  # a failed attempt: retry soon (the last success stands)
            log.info("background keepalive of lease %x failed: %s", lease_id, exc)

            def failed(kept: _Kept) -> None:
                kept.failures += 1
                kept.next_at = sent + min(0.2, ttl / 6)

            self._settle(lease_id, failed)
            return

        def succeeded(kept: _Kept) -> None:
            kept.failures, kept.sent, kept.ttl = 0, sent, float(answered)
            kept.next_at = sent + answered / 3

        self.refreshes += 1
        self._settle(lease_id, succeeded)

    def _settle(self, lease_id: int, change: Callable[[_Kept], None]) -> None:
        with self._lock:
            kept = self._leases.get(lease_id)
            if kept is not None:
                change(kept)


async def refresh(keeper: Keeper, lease_id: int, ask: Callable[[], Awaitable[int]]) -> int:
    """A store's ``refresh_lease``: the keeper's answer when it vouches for one; else
    ``ask`` etcd (it returns the TTL, 0 for a lease that is gone) and keep the lease."""
    try:
        cached = keeper.cached(lease_id)
    except Gone as exc:
        raise errors.LeaseExpired(str(exc)) from exc
    if cached is not None:
        return cached
    sent = time.monotonic()
    try:
        ttl = await ask()
    except errors.LeaseExpired:
        keeper.forget(lease_id)
        raise
    if ttl <= 0:
        keeper.forget(lease_id)
        raise errors.LeaseExpired(f"lease {lease_id:x} is gone (expired or revoked)")
    keeper.keep(lease_id, ttl, sent)
    return ttl


def refresh_now(lease_id: int, ask: Callable[[], int]) -> int:
    """One keepalive on the keeper's thread: ``ask`` (raising broker errors) gives the
    TTL; a lease that is gone raises ``Gone``."""
    try:
        ttl = ask()
    except errors.LeaseExpired as exc:
        raise Gone(str(exc)) from exc
    if ttl <= 0:
        raise Gone(f"lease {lease_id:x} is gone (expired or revoked)")
    return ttl
