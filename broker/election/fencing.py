"""Fenced writes: every controller write carries the leader's fencing token.

Invariant 3 lives here. The token (the *fence*) is the ``create_revision`` of the leader
key ``election/controller`` from the writer's own campaign; ``fenced_txn`` adds
``create_revision(election/controller) == fence`` to every controller transaction, so a
deposed leader -- paused, partitioned, or just slow to notice -- can never land a write
once another replica has won: etcd itself refuses it.

The failure branch always starts with a read of the leader key, taken atomically with the
compare, so telling "fenced out" from "another compare failed" needs no second round trip
and has no race.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker import errors
from broker.store import keys
from broker.store import protocol as p


def fence_compare(fence: int) -> p.Compare:
    """The compare that holds only while the leader key is the one created at ``fence``."""
    return p.Compare(keys.LEADER, p.Target.CREATE, p.Op.EQUAL, fence)


async def fenced_txn(
    store: p.Store,
    fence: int,
    success_ops: Sequence[p.TxnOp],
    extra_compares: Sequence[p.Compare] = (),
    failure_ops: Sequence[p.Get] = (),
) -> p.TxnResult:
    """Run ``success_ops`` only if this writer still leads (and ``extra_compares`` hold).

    Returns the ``TxnResult`` when the transaction succeeded. Otherwise:

    - the leader key is gone or was created at another revision: ``FencedOut``;
    - the fence held but an extra compare failed: ``Conflict`` -- unless ``failure_ops``
      were given, in which case the failed ``TxnResult`` is returned (``succeeded`` is
      False) so the caller can use what they read (a compare-and-swap loop).

    ``failure_ops`` may only read: a write in the failure branch would land even when the
    writer has been fenced out.
    """
    for op in failure_ops:
        if not isinstance(op, p.Get):
            raise TypeError("fenced_txn: failure_ops may only be Get (reads)")
    result = await store.txn(
        [fence_compare(fence), *extra_compares],
        success_ops,
        [p.Get(keys.LEADER), *failure_ops],
    )
    if result.succeeded:
        return result
    leader = result.responses[0]
    if not leader or leader[0].create_revision != fence:
        holder = "none"
        if leader:
            name = leader[0].value.decode(errors="replace")
            holder = f"{name} since revision {leader[0].create_revision}"
        raise errors.FencedOut(
            f"write fenced out: fence {fence} is stale (leader: {holder})", fence=fence
        )
    if not failure_ops:
        raise errors.Conflict(
            "a compare of a fenced write failed; re-read and retry", retry_after=0.0
        )
    return p.TxnResult(False, result.revision, result.responses[1:])


async def current_leader(store: p.Store) -> tuple[str, int] | None:
    """(leader name, fence) as etcd has it now, or None when nobody leads."""
    kv = await store.get(keys.LEADER)
    if kv is None:
        return None
    return kv.value.decode(errors="replace"), kv.create_revision
