"""A bounded LRU cache whose entries expire: validated tokens, kept briefly.

Invariant: the cache never holds more than ``size`` entries and never returns an entry
older than ``ttl`` seconds (measured by an injectable monotonic clock), so a revoked
Keystone token is trusted at most ``ttl`` seconds after its revocation.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TtlCache(Generic[V]):
    def __init__(
        self, size: int, ttl: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if size < 0 or ttl < 0:
            raise ValueError("size and ttl must not be negative")
        self.size = size
        self.ttl = ttl
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if self._clock() >= expires:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: str, value: V, *, ttl: float | None = None) -> None:
        """Keep ``value`` for ``ttl`` seconds, but never longer than the cache's own ttl."""
        lifetime = self.ttl if ttl is None else min(ttl, self.ttl)
        if self.size == 0 or lifetime <= 0:
            return
        self._items[key] = (self._clock() + lifetime, value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()
