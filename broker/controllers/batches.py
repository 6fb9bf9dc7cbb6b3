"""A placement's desired objects, written and tombstoned in fenced batches (issue 10 item 8).

A VNF of 60 members with 4 connection points is some 350 desired objects; etcd takes at
most 128 operations per transaction. What must be atomic stays atomic: the claims, the
PLACED record and the placement are one fenced transaction (``commit.commit``), carrying
as many objects as still fit. The rest follow in fenced transactions of at most
``BATCH`` objects, each compared on the record's revision and advancing the record's
count of objects written (``extra[WRITTEN]`` of ``extra[OBJECTS]``) in the same
transaction. Deletion tombstones the same way (``extra[TOMBSTONED]``).

Invariant: the record says exactly how many of the placement's objects (in
``render.objects`` order, which the record's members and claims reproduce) are written,
because each batch and its count land together or not at all. A leader killed between
batches leaves a record the next leader resumes from: nothing is lost, nothing written
twice, and the VNF is not followed (deadlines, ACTIVE) before every object is written.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from broker.election.fencing import fenced_txn
from broker.models import codec, objects
from broker.models import vnf as model
from broker.placement import claims as cl
from broker.placement import render
from broker.placement.plan import Assignment
from broker.placement.snapshot import Snapshot
from broker.store import keys
from broker.store.protocol import Compare, Get, KeyValue, Op, Put, Store, Target

BATCH = 100
"""Objects per follow-up transaction (etcd's default limit is 128 operations)."""
TXN_OPS = 120
"""Operations the first (claims) transaction may carry in all."""
WRITTEN, OBJECTS, TOMBSTONED = "written", "objects", "tombstoned"
"""``extra`` keys of a VNF record: objects written, objects placed, objects tombstoned."""


def first_share(objs: Sequence[render.Desired], other_ops: int) -> int:
    """How many objects ride in the claims transaction beside ``other_ops`` other writes."""
    return max(0, min(len(objs), TXN_OPS - other_ops))


def progress(record: model.VnfRecord, written: int, total: int) -> model.VnfRecord:
    return dataclasses.replace(
        record, extra={**record.extra, WRITTEN: str(written), OBJECTS: str(total)}
    )


def pending(record: model.VnfRecord) -> tuple[int, int]:
    """(objects written, objects placed): equal when none is left to write (and for a
    record placed before batches existed, which wrote them all at once)."""
    total = int(record.extra.get(OBJECTS, "0"))
    return int(record.extra.get(WRITTEN, str(total))), total


def assignment(
    desc: model.Descriptor, m: model.MemberStatus, site: str, claim: cl.Claim
) -> Assignment:
    """Member ``m`` of ``desc`` on ``claim`` at ``site``, in its current role."""
    member = next(x for x in model.members(desc) if x.name == m.name)
    return Assignment(dataclasses.replace(member, role=m.role), site, claim, 0.0)


def assignments(
    snap: Snapshot, desc: model.Descriptor, record: model.VnfRecord
) -> list[Assignment] | None:
    """The plan's assignments again, from the record's members and their claims (None
    while the snapshot has not seen a claim yet)."""
    out = []
    for m in record.members:
        site = snap.sites.get(m.site)
        claim = site.claims.get(f"{record.id}/{m.name}") if site is not None else None
        if claim is None:
            return None
        out.append(assignment(desc, m, m.site, claim))
    return out


async def write_next(
    store: Store,
    fence: int,
    kv: KeyValue,
    record: model.VnfRecord,
    objs: Sequence[render.Desired],
) -> None:
    """Write the next batch of ``objs`` with the record's new count, compared on it."""
    written, total = pending(record)
    batch = objs[written : written + BATCH]
    update = progress(record, written + len(batch), total)
    update = dataclasses.replace(update, updated_ms=int(time.time() * 1000))
    await fenced_txn(
        store,
        fence,
        [*(o.put() for o in batch), Put(kv.key, codec.encode(update))],
        [Compare(kv.key, Target.MOD, Op.EQUAL, kv.mod_revision)],
    )


async def tombstones(store: Store, placed: Sequence[tuple[str, ...]]) -> list[Put]:
    """Each placed object's tombstone (the generation after the stored one), in batches
    of reads; objects never written get none."""
    out = []
    for i in range(0, len(placed), BATCH):
        wanted = [keys.desired(site, kind, name) for site, kind, name in placed[i : i + BATCH]]
        found = await store.txn([], [Get(key) for key in wanted])
        out += [
            Put(key, objects.Desired.decode(got[0].value).tombstone().encode())
            for key, got in zip(wanted, found.responses, strict=True)
            if got
        ]
    return out


async def read_all(store: Store, wanted: Sequence[str]) -> list[KeyValue | None]:
    """Each key's value (None: absent), read in transactions of at most ``BATCH`` gets."""
    out: list[KeyValue | None] = []
    for i in range(0, len(wanted), BATCH):
        found = await store.txn([], [Get(key) for key in wanted[i : i + BATCH]])
        out += [r[0] if r else None for r in found.responses]
    return out
