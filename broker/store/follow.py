"""Follow a prefix: its listing, a ``Listed`` mark, then its changes — forever.

Every cache the broker keeps from etcd (the gateway's desired feed and revocations, the
controllers' views, the placement snapshot, the image orders) is built by one loop::

    async for item in follow.follow(store, keys.SITES):
        if isinstance(item, KeyValue):      # the listing, key by key
            take it
        elif isinstance(item, follow.Listed):
            forget what item.keys does not hold; the cache is now complete
        else:                               # a WatchEvent after the listing
            apply it

When the watch breaks (etcd unreachable, the revision compacted, the store closed under
it) the prefix is listed again and watched from that listing's revision, after a delay
that grows while listings keep failing (``Backoff``); the consumer sees the new listing
followed by a new ``Listed`` mark. One policy for every follower, as kopf's
``infinite_watch`` yields ``Bookmark.LISTED`` after each listing.

Invariant (what the contract tests check, on the fake and on etcd): after each ``Listed``
the consumer holds exactly the prefix at the listing's revision, and the events that
follow are exactly those after that revision, in revision order — none lost across a
re-list, none delivered twice (with a custom ``lister`` reading at several revisions,
events up to the newest of them may repeat; such consumers compare ``mod_revision``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

from broker import errors
from broker.store.protocol import EventType, KeyValue, Store, WatchEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Listed:
    """The listing of ``prefix`` is complete at ``revision``; ``keys`` is what it held."""

    prefix: str
    revision: int
    keys: frozenset[str]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before re-listing: ``first``, doubled after each failure up to ``cap``; back
    to ``first`` once a watch has lived ``cap`` seconds."""

    first: float = 0.2
    cap: float = 3.0

    def after(self, delay: float) -> float:
        return min(self.cap, max(self.first, delay * 2))


RELIST = Backoff()

Lister = Callable[[str], Awaitable[tuple[list[KeyValue], int]]]
"""Lists a prefix: its KeyValues and the revision to watch after (the oldest read)."""


Item = KeyValue | Listed | WatchEvent


def change(item: KeyValue | WatchEvent) -> tuple[str, bytes]:
    """(key, value) of a listed key or an event; value ``b""`` when it was deleted."""
    if isinstance(item, WatchEvent) and item.type is EventType.DELETE:
        return item.key, b""
    return item.key, item.value


async def follow(
    store: Store,
    prefix: str,
    *,
    backoff: Backoff = RELIST,
    lister: Lister | None = None,
) -> AsyncIterator[Item]:
    """See the module docstring. Runs until the consumer stops iterating (or is
    cancelled); ``StoreUnavailable`` never reaches the consumer."""
    list_prefix = lister or store.get_prefix
    loop = asyncio.get_running_loop()
    delay = backoff.first
    while True:
        try:
            kvs, revision = await list_prefix(prefix)
        except errors.StoreUnavailable as exc:
            log.warning("listing %s failed (%s); again in %.1fs", prefix, exc, delay)
            await asyncio.sleep(delay)
            delay = backoff.after(delay)
            continue
        for kv in kvs:
            yield kv
        yield Listed(prefix, revision, frozenset(kv.key for kv in kvs))
        started = loop.time()
        try:
            watch = store.watch_prefix(prefix, start_revision=revision + 1)
            async with contextlib.aclosing(watch):  # type: ignore[type-var]
                async for event in watch:
                    yield event
            why = "the watch ended"
        except errors.StoreUnavailable as exc:
            why = str(exc)
        if loop.time() - started >= backoff.cap:
            delay = backoff.first
        log.warning("watch on %s broke (%s); re-listing in %.1fs", prefix, why, delay)
        await asyncio.sleep(delay)
        delay = backoff.after(delay)


async def changes(
    store: Store, prefix: str, *, backoff: Backoff = RELIST
) -> AsyncIterator[tuple[str, bytes]]:
    """``follow`` for consumers that only react to keys: (key, value) of every listed key
    and every event (value ``b""``: deleted), without the marks."""
    async for item in follow(store, prefix, backoff=backoff):
        if not isinstance(item, Listed):
            yield change(item)


def forgotten(listed: Listed, held: Iterable[str]) -> list[str]:
    """Keys a consumer holds under ``listed.prefix`` that the listing no longer has."""
    return [k for k in held if k.startswith(listed.prefix) and k not in listed.keys]
