"""The broker's one quota seam: the ledger over the store, and what placement asks of it.

``build`` makes it once per replica (``running.py``): one ``quota.ledger.Ledger`` over
``ledgerstore.StoreLedger`` (one batcher and cache per replica) and the ``Headroom`` over
that ledger. The API state and the leader's controllers get the same ``Quotas``. The
quota library's errors are mapped to HTTP by the API's one problem table
(``broker/api/problems.py``) and handled as they are by the controllers: store errors
become quota errors once, in ``StoreLedger``, and never turn back.

Invariant 7 (no oversubscription): every reservation — through the API's quota routes
or a VNF's placement — is admitted by this one ``Ledger``.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.quotas import headroom as hr
from broker.quotas.ledgerstore import StoreLedger
from broker.settings import BrokerSettings
from broker.store.protocol import Store
from quota.ledger import Ledger


@dataclass(frozen=True, slots=True)
class Quotas:
    ledger: Ledger
    headroom: hr.Headroom


def build(store: Store, settings: BrokerSettings) -> Quotas:
    """The replica's quota seam over ``store``."""
    ledger = Ledger(StoreLedger(store))
    return Quotas(ledger, hr.LedgerHeadroom(ledger, ttl=settings.quota.reservation_ttl))
