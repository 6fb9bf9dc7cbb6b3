"""Group commit of the sessions' opening records: a herd costs etcd one txn per batch.

Each stream that opens writes its site's live-session record (``sitestatus``, under the
replica's lease) and its inventory. One transaction per opening made a cold herd of
10,000 agents 10,000 transactions in the first minute, each a round trip on the etcd
pool that the openings queue behind. ``Openings`` gathers the records of the streams
opening at the same moment and writes them together: one transaction is in flight at a
time; whatever arrives meanwhile goes in the next one, up to ``max_ops`` operations
(etcd takes 128 per transaction). Alone, an opening is written at once, as before; under
a herd, the batches grow by themselves to what etcd's round trip lets through.

Invariants: a caller returns only once its own records are written (or with the error
that stopped them: every opening of a failed batch is refused, nothing is half-written,
since a transaction lands whole or not at all); a key appears at most once per
transaction (a site that reconnects within one batch is written in the next); an
opening abandoned before its batch went out is never written.
"""

from __future__ import annotations

import asyncio
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
class _Opening:
    ops: Callable[[int], Sequence[Put]]  # the records, given the lease id
    keys: frozenset[str]
    done: asyncio.Future[None]


class Openings:
    """Writes opening records in batches under the replica's lease."""

    def __init__(self, store: Store, lease: ReplicaLease, *, max_ops: int = MAX_OPS) -> None:
        if max_ops < 1:
            raise ValueError(f"max_ops must be at least 1, not {max_ops}")
        self.store = store
        self.lease = lease
        self.max_ops = max_ops
        self._queue: list[_Opening] = []
        self._writer: asyncio.Task[None] | None = None
        self.txns = 0  # transactions written (tests, benchmarks)
        self.written = 0  # openings written

    async def write(self, keys: Sequence[str], ops: Callable[[int], Sequence[Put]]) -> None:
        """Write ``ops(lease_id)`` (puts of ``keys``) in the next batch; return once written.

        Raises what stopped the batch (``StoreUnavailable``, ``LeaseExpired``)."""
        opening = _Opening(ops, frozenset(keys), asyncio.get_running_loop().create_future())
        self._queue.append(opening)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="opening records")
        await opening.done

    def _next_batch(self) -> list[_Opening]:
        """The longest run from the front of the queue that fits one transaction and
        names no key twice; abandoned openings are dropped on the way."""
        batch: list[_Opening] = []
        seen: set[str] = set()
        size = 0
        while self._queue:
            opening = self._queue[0]
            if opening.done.done():  # its stream went away before the batch went out
                self._queue.pop(0)
                continue
            width = len(opening.keys)
            if batch and (size + width > self.max_ops or seen & opening.keys):
                break
            self._queue.pop(0)
            batch.append(opening)
            seen |= opening.keys
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
            except Exception as exc:  # every opening of the batch hears why
                for opening in batch:
                    if not opening.done.done():
                        opening.done.set_exception(exc)
                continue
            except asyncio.CancelledError:
                for opening in [*batch, *self._queue]:
                    opening.done.cancel()
                self._queue.clear()
                raise
            self.txns += 1
            self.written += len(batch)
            for opening in batch:
                if not opening.done.done():
                    opening.done.set_result(None)
