"""Urgent store calls: the etcd calls of a DOWN verdict and of a promotion skip the queue.

The threaded etcd client runs every call on a small thread pool (``EtcdStore``); when a
site holding hundreds of VNFs is lost, restores, placement and the controllers' reads can
fill that pool's queue for seconds. Code doing urgent work (the leader's priority lane,
``broker.controllers.lane``; a gateway closing a lost site's record) runs inside
``urgent()``: the store then runs its calls on a lane of threads nothing else uses, as
lease calls have theirs. The flag is a context variable, so tasks started inside the
block (``asyncio.gather``) carry it, and nothing outside the block does.

Invariant: only work that holds the priority lane (or detects a loss) enters ``urgent``;
the lane is small, so it stays short.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

URGENT: contextvars.ContextVar[bool] = contextvars.ContextVar("meridian_urgent", default=False)


@contextlib.contextmanager
def urgent() -> Iterator[None]:
    """Store calls made in this block (and in tasks it starts) take the urgent lane."""
    token = URGENT.set(True)
    try:
        yield
    finally:
        URGENT.reset(token)
