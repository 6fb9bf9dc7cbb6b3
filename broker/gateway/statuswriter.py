"""What one agent stream reports, on its way to etcd behind the stream's reader.

The reader of a stream only queues: an object's status, an event, the site's inventory or
usage go into ``pending`` (the latest value per key) and the stream's ``StatusWriter``
writes them in transactions of up to ``BATCH`` puts, as fast as etcd takes them.

Invariant: reading a stream never waits for etcd. A heartbeat is noted (and acked) as soon
as it arrives, however many statuses came before it. When each status was written before
the next message was read, a site that came back with hundreds of objects reported their
statuses for longer than ``health.down_after`` -- one transaction each -- so its
heartbeats, read only after them, came too late: it was judged silent, its stream closed,
and it reconnected to do the same again, never UP, its stale members never deleted.

Nothing reported is lost while the stream lives: a status leaves ``pending`` only once a
transaction holding that very value landed; etcd unreachable keeps it (and a newer status
of the same object replaces it) until etcd answers again.

A closing stream never overwrites a newer session's reports: its last statuses are written
only while the site's ``sitestatus`` record is still this session's (``close(guard=...)``,
one compare in the same transaction). An agent that reconnected elsewhere reports every
status again there, so what a superseded stream drops is not lost; its events (each under
its own key) are written whatever the record says.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from broker import errors
from broker.store import keys
from broker.store.protocol import Compare, Put, Store

log = logging.getLogger(__name__)

BATCH = 120
"""Puts per transaction (etcd takes 128 operations)."""
RETRY_S = 0.2
"""Seconds between attempts while etcd is unreachable."""
FINAL_S = 2.0
"""Seconds a closing stream's writer still has for what is pending."""


class StatusWriter:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.pending: dict[str, bytes] = {}
        """Key -> the latest value not written yet (``datapathevents`` looks here too)."""
        self.wake = asyncio.Event()
        self.txns = 0  # transactions written (tests, benchmarks)

    def add(self, key: str, value: bytes) -> None:
        self.pending[key] = value
        self.wake.set()

    async def run(self) -> None:
        """Write what is pending until cancelled; etcd failing only delays it."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                if not await self.write_once():
                    await asyncio.sleep(RETRY_S)

    async def write_once(self, guard: Compare | None = None) -> bool:
        """One transaction of what is pending (if ``guard`` holds); False when etcd did
        not take it. A failed guard drops everything but the events."""
        batch = dict(itertools.islice(self.pending.items(), BATCH))
        try:
            result = await self.store.txn(
                [guard] if guard else [], [Put(key, value) for key, value in batch.items()]
            )
        except errors.StoreUnavailable as exc:
            log.warning("%d status updates wait for etcd: %s", len(self.pending), exc)
            return False
        if not result.succeeded:
            stale = [k for k in self.pending if not k.startswith(keys.EVENTS)]
            log.info("%d status updates dropped: a newer session reports for the site "
                     "now", len(stale))
            for key in stale:
                del self.pending[key]
            return bool(self.pending) and await self.write_once()
        self.txns += 1
        for key, value in batch.items():
            if self.pending.get(key) is value:  # not replaced by a newer one meanwhile
                del self.pending[key]
        return True

    async def close(self, guard: Compare | None = None) -> None:
        """The stream ended: write what is still pending, for at most ``FINAL_S``, each
        transaction only while ``guard`` (the session still owns the site's record)
        holds."""
        try:
            async with asyncio.timeout(FINAL_S):
                while self.pending and await self.write_once(guard):
                    pass
        except TimeoutError:
            pass
        if self.pending:
            log.warning("%d status updates dropped with their stream (the agent reports "
                        "them again when it reconnects)", len(self.pending))
