"""The quota ledger's ``LedgerStore`` over the broker's ``Store``.

``quota`` is pure logic; this adapter gives it etcd (or the in-memory store in tests)
under ``quota/`` and is the one boundary where store errors become quota errors
(``StoreUnavailable`` → ``LedgerUnavailable``, ``LeaseExpired`` → ``LeaseGone``), so
nothing of the broker leaks into the library. It keeps invariant 7's two requirements of
the seam by construction: a ``txn`` is one etcd transaction, and a ``read`` is one
read-only transaction, so everything it returns is as of one revision.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker import errors
from broker.store import keys
from broker.store import protocol as p
from quota import errors as quota_errors
from quota import kv


def _translate(exc: errors.BrokerError, what: str) -> quota_errors.QuotaError:
    if isinstance(exc, errors.LeaseExpired):
        return quota_errors.LeaseGone(f"{what}: {exc}")
    if isinstance(exc, errors.Temporary):
        return quota_errors.LedgerUnavailable(f"{what}: {exc}", retry_after=exc.retry_after)
    return quota_errors.LedgerUnavailable(f"{what}: {exc}", retry_after=1.0)


class StoreLedger:
    """``quota.kv.LedgerStore`` over a broker ``Store``, rooted at ``keys.QUOTA``."""

    def __init__(self, store: p.Store, root: str = keys.QUOTA) -> None:
        self.store = store
        self.root = root

    def _key(self, key: str) -> str:
        return self.root + key

    def _item(self, kv_: p.KeyValue) -> kv.Item:
        return kv.Item(
            keys.name_in(self.root, kv_.key), kv_.value, kv_.create_revision, kv_.mod_revision
        )

    def _cond(self, cond: kv.Cond) -> p.Compare:
        if isinstance(cond, kv.Unchanged):
            return p.Compare(self._key(cond.key), p.Target.MOD, p.Op.EQUAL, cond.mod_revision)
        return p.Compare(self._key(cond.key), p.Target.CREATE, p.Op.EQUAL, cond.create_revision)

    def _write(self, op: kv.Write | kv.Remove) -> p.TxnOp:
        if isinstance(op, kv.Write):
            return p.Put(self._key(op.key), op.value, op.lease)
        return p.Delete(self._key(op.key))

    def _get(self, read: kv.Read) -> p.Get:
        return p.Get(self._key(read.key), prefix=read.prefix)

    async def read(self, reads: Sequence[kv.Read]) -> tuple[list[tuple[kv.Item, ...]], int]:
        try:
            result = await self.store.txn([], [self._get(r) for r in reads])
        except errors.BrokerError as exc:
            raise _translate(exc, "quota read") from exc
        return [tuple(self._item(i) for i in found) for found in result.responses], result.revision

    async def txn(
        self,
        conds: Sequence[kv.Cond],
        writes: Sequence[kv.Write | kv.Remove],
        reads: Sequence[kv.Read],
    ) -> kv.Outcome:
        try:
            result = await self.store.txn(
                [self._cond(c) for c in conds],
                [self._write(w) for w in writes],
                [self._get(r) for r in reads],
            )
        except errors.BrokerError as exc:
            raise _translate(exc, "quota txn") from exc
        if result.succeeded:
            return kv.Outcome(True, result.revision)
        found = tuple(tuple(self._item(i) for i in r) for r in result.responses)
        return kv.Outcome(False, result.revision, found)

    async def grant_lease(self, ttl: int) -> tuple[int, int]:
        try:
            lease = await self.store.grant_lease(ttl)
        except errors.BrokerError as exc:
            raise _translate(exc, "quota lease") from exc
        return lease.id, lease.ttl
