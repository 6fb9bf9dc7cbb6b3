"""What a what-if and the survivability report read besides the snapshot: the followed
VNFs with their parsed descriptors, what each tenant's quota has left, and the image
catalogue for the what-if's image table.

Shared by the API (per request, a caller's own VNFs) and the leader's survivability
controller (every VNF), so both compute on the same inputs.

Invariant: read only; a corrupt stored record is a ``BrokerError`` naming its key, never
mistaken for the caller's bad input.
"""

from __future__ import annotations

from collections.abc import Callable

from broker import errors
from broker.controllers.failover import FOLLOWED
from broker.drills import imagetable, whatif
from broker.models import codec
from broker.models import vnf as model
from broker.quotas.ledgerstore import StoreLedger
from broker.store import keys
from broker.settings import BrokerSettings
from broker.store.protocol import Store
from quota import admission, models
from replication import catalog as cat
from replication.errors import ReplicationError
from quota.layout import tenant_reads, view_from


async def placed(
    store: Store, keep: Callable[[model.VnfRecord], bool] = lambda _: True
) -> list[whatif.Placed]:
    """The followed VNFs ``keep`` lets through, with their parsed descriptors."""
    kvs, _ = await store.get_prefix(keys.VNFS)
    out = []
    for kv in kvs:
        try:
            rec = codec.decode(model.VnfRecord, kv.value)
        except errors.InvalidInput as exc:
            raise errors.BrokerError(f"the value stored at {kv.key!r} is corrupt: {exc}") from exc
        if not rec.deleted and rec.state in FOLLOWED and keep(rec):
            out.append(whatif.Placed(rec, model.parse(rec.descriptor)))
    return out


async def quota_free(store: Store, vnfs: list[whatif.Placed]) -> dict[str, dict[str, int]]:
    """Each VNF's tenant: what its quota has left per class (unlimited classes left
    out), so a what-if's replacements are bound by quota as restore is."""
    ledger = StoreLedger(store)
    out: dict[str, dict[str, int]] = {}
    for tenant in sorted({p.record.tenant for p in vnfs}):
        found = models.tenant_id(tenant)
        items, revision = await ledger.read(tenant_reads(found))
        view = view_from(found, items, revision)
        lines = admission.report(view.limits, view.account, view.holds.values())
        out[tenant] = {line.resource: line.left for line in lines if line.left is not None}
    return out


async def catalog(store: Store, settings: BrokerSettings) -> imagetable.Catalog:
    """The image catalogue as the what-if's image table reads it."""
    kvs, _ = await store.get_prefix(keys.IMAGES)
    entries, replicas = [], []
    for kv in kvs:
        try:
            if keys.split_image_key(kv.key)[1]:
                replicas.append(cat.decode_replica(kv.value))
            else:
                entries.append(cat.Entry.decode(kv.value))
        except ReplicationError as exc:
            raise errors.BrokerError(f"the value stored at {kv.key!r} is corrupt: {exc}") from exc
    return imagetable.Catalog.build(entries, replicas, settings.images.estimate_rate_mbps * 1e6)
