"""The relay's authorization of one ``Pull``: the copy orders as etcd has them now.

``CatalogAccess`` reads the image's catalog record, the caller's replica and the source's
replica in one read-only transaction (so all three are as of one revision) and asks
``replication.access.refusal``. It reads etcd rather than a replica's cache: a pull
happens once per copy attempt, and a cache that lags the controller would refuse an order
the agent already received — or, worse, allow one the controller already withdrew.

Invariant 5 reaches image bytes through here: the caller is the site its certificate
names, and it gets only what the fenced controller ordered for it.
"""

from __future__ import annotations

from typing import Protocol

from broker.store import keys
from broker.store import protocol as p
from replication import access, catalog
from replication import errors as rerrors
from replication.catalog import Entry, Replica


class PullAccess(Protocol):
    async def refusal(self, caller: str, image: str, source: str) -> str | None:
        """Why ``caller`` may not pull ``image`` from ``source`` (``None``: it may).

        May raise ``StoreUnavailable``."""
        ...


class CatalogAccess:
    """``PullAccess`` from ``images/<id>`` and ``images/<id>/replicas/<site>``."""

    def __init__(self, store: p.Store) -> None:
        self.store = store

    async def refusal(self, caller: str, image: str, source: str) -> str | None:
        for what, value in (("image", image), ("source_site", source)):
            if not access.valid_id(value):
                return f"{what} {value[:140]!r} is not a valid id"
        result = await self.store.txn(
            [],
            [
                p.Get(keys.image(image)),
                p.Get(keys.image_replica(image, caller)),
                p.Get(keys.image_replica(image, source)),
            ],
        )
        entry_kv, ordered_kv, held_kv = (found[0] if found else None for found in result.responses)
        try:
            entry = Entry.decode(entry_kv.value) if entry_kv is not None else None
            ordered = _replica(ordered_kv)
            held = _replica(held_kv)
        except rerrors.ReplicationError as exc:
            return f"the catalog record of image {image} is unreadable: {exc}"
        return access.refusal(image, caller, source, entry, ordered, held)


def _replica(kv: p.KeyValue | None) -> Replica | None:
    return catalog.decode_replica(kv.value) if kv is not None else None
