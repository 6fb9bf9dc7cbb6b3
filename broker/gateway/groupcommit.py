"""Group commit of the sessions' opening records: a herd costs etcd one txn per batch.

Each stream that opens writes its site's live-session record (``sitestatus``, under the
replica's lease) and its inventory. One transaction per opening made a cold herd of
10,000 agents 10,000 transactions in its first minute, each a round trip on the etcd
pool that the openings queue behind. ``GroupCommit`` gathers the writes of the streams
opening at the same moment and writes them together: one transaction is in flight at a
time; whatever arrives meanwhile goes in the next one, up to ``max_ops`` operations
(etcd takes 128 per transaction). Alone, a write goes out at once, as before; under a
herd, the batches grow by themselves to what etcd's round trip lets through. (What a
stream reports later -- usage, statuses -- goes through its own ``statuswriter``.)

Invariants: a caller returns only once its own puts are written (or with the error that
stopped them: every write of a failed batch fails, nothing is half-written, since a
transaction lands whole or not at all); a key appears at most once per transaction (a
site that reconnects within one batch is written in the next); a write abandoned before
its batch went out is never written.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Callable, Sequence

from broker.gateway import liveness
from broker.gateway.feeds import ReplicaLease
from broker.store.protocol import Put, Store

log = logging.getLogger(__name__)

MAX_OPS = liveness.BATCH
"""Operations per transaction (etcd takes 128)."""


@dataclasses.dataclass(eq=False, slots=True)
class _Write:
    ops: Callable[[int], Sequence[Put]]  # the records, given the lease id
    keys: frozenset[str]
    done: asyncio.Future[None]


class GroupCommit:
    """Writes puts in batches, under the replica's lease where they ask for it."""

    def __init__(self, store: Store, lease: ReplicaLease, *, max_ops: int = MAX_OPS) -> None:
        if max_ops < 1:
            raise ValueError(f"max_ops must be at least 1, not {max_ops}")
        self.store = store
        self.lease = lease
        self.max_ops = max_ops
        self._queue: collections.deque[_Write] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
        self.txns = 0  # transactions written (tests, benchmarks)
        self.written = 0  # writes done

    async def write(self, keys: Sequence[str], ops: Callable[[int], Sequence[Put]]) -> None:
        """Put ``ops(lease_id)`` (of ``keys``) in the next batch; return once written.

        Raises what stopped the batch (``StoreUnavailable``, ``LeaseExpired``)."""
        item = _Write(ops, frozenset(keys), asyncio.get_running_loop().create_future())
        self._queue.append(item)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="gateway group commit")
        await item.done

    def _next_batch(self) -> list[_Write]:
        """The longest run from the front of the queue that fits one transaction and
        names no key twice; abandoned writes are dropped on the way."""
        batch: list[_Write] = []
        seen: set[str] = set()
        size = 0
        while self._queue:
            item = self._queue[0]
            if item.done.done():  # its stream went away before the batch went out
                self._queue.popleft()
                continue
            width = len(item.keys)
            if batch and (size + width > self.max_ops or seen & item.keys):
                break
            self._queue.popleft()
            batch.append(item)
            seen |= item.keys
            size += width
        return batch

    async def _drain(self) -> None:
        while batch := self._next_batch():
            try:
                await liveness.leased_txn(
                    self.store,
                    self.lease,
                    lambda lease_id: [op for o in batch for op in o.ops(lease_id)],
                )
            except Exception as exc:  # every item of the batch hears why
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(exc)
                continue
            except asyncio.CancelledError:
                for item in [*batch, *self._queue]:
                    item.done.cancel()
                self._queue.clear()
                raise
            self.txns += 1
            self.written += len(batch)
            for item in batch:
                if not item.done.done():
                    item.done.set_result(None)
