"""A Store whose watches break on demand: the fault etcd shows when a member goes or a
stream resets, injected at our own seam (the Store protocol) over the fake or etcd."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from broker import errors
from broker.store.protocol import KeyValue, Store, WatchEvent


class BreakingWatches:
    """The store under test, whose watches break after ``every`` events (a fault at our
    own seam: what etcd does when a member goes or a stream resets)."""

    def __init__(self, inner: Store, every: int) -> None:
        self.inner, self.every, self.breaks = inner, every, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        return await self.inner.get_prefix(prefix)

    async def watch_prefix(
        self, prefix: str, *, start_revision: int | None = None
    ) -> AsyncIterator[WatchEvent]:
        watch = self.inner.watch_prefix(prefix, start_revision=start_revision)
        async with contextlib.aclosing(watch):  # type: ignore[type-var]
            seen = 0
            async for event in watch:
                yield event
                seen += 1
                if seen == self.every:
                    self.breaks += 1
                    raise errors.StoreUnavailable("watch reset (test)")
