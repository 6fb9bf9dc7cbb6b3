"""The ledger's keys in the store, and a tenant's view built from them.

Layout (relative to the ledger's root, ``quota/`` in etcd)::

    seq/<tenant>          rewritten by every write that changes what admission looks at
                          (reserve, commit, release, limits, reconciliation): the CAS point
    ledger/<tenant>       committed usage per site, plus reconciliation adjustments
    limits/<tenant>       the tenant's quota (admin)
    classes/<name>        named quota classes (``default`` applies unless one is named)
    holds/<tenant>/<id>   a live reservation, attached to an expiring lease
    done/<tenant>/<id>    how a reservation was settled, kept for idempotent retries

Invariant 7 (no oversubscription) depends on one rule about this layout: every write that
adds to what admission counts (a hold, committed usage, a lower limit) rewrites
``seq/<tenant>`` in the same transaction, so comparing ``seq``'s revision proves a whole
view current. Only lease expiry removes holds without it — which only frees quota.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from quota import kv
from quota.admission import Reserved
from quota.models import (
    DEFAULT_CLASS,
    Account,
    EffectiveLimits,
    Hold,
    Settled,
    TenantId,
    TenantQuota,
    from_json,
    limits,
)


# -- keys ---------------------------------------------------------------------------


def seq_key(tenant: str) -> str:
    return f"seq/{tenant}"


def ledger_key(tenant: str) -> str:
    return f"ledger/{tenant}"


def limits_key(tenant: str) -> str:
    return f"limits/{tenant}"


def class_key(name: str) -> str:
    return f"classes/{name}"


def holds_prefix(tenant: str) -> str:
    return f"holds/{tenant}/"


def hold_key(tenant: str, rid: str) -> str:
    return f"holds/{tenant}/{rid}"


def done_key(tenant: str, rid: str) -> str:
    return f"done/{tenant}/{rid}"


# -- cached view of one tenant ------------------------------------------------------


@dataclass(slots=True)
class TenantView:
    """What admission looks at for one tenant, as of ``seq_mod``."""

    tenant: TenantId
    seq_mod: int
    quota: TenantQuota
    class_name: str
    class_mod: int
    limits: EffectiveLimits
    account: Account
    holds: dict[str, Hold]
    revision: int
    reserved: Reserved = field(default_factory=Reserved)  # totals of ``holds``
    done: dict[str, Settled] = field(default_factory=dict)  # settled records looked up
    looked: set[str] = field(default_factory=set)  # ids whose settled record was read


def tenant_reads(tenant: str, done_ids: Iterable[str] = ()) -> list[kv.Read]:
    """What a tenant's view is built from (``view_from`` expects this order)."""
    return [
        kv.Read(seq_key(tenant)),
        kv.Read(ledger_key(tenant)),
        kv.Read(limits_key(tenant)),
        kv.Read(holds_prefix(tenant), prefix=True),
        kv.Read("classes/", prefix=True),
        *(kv.Read(done_key(tenant, rid)) for rid in done_ids),
    ]


def view_from(tenant: TenantId, items: Sequence[tuple[kv.Item, ...]], revision: int) -> TenantView:
    """Build a view from the results of ``tenant_reads(tenant, ...)``."""
    seq, ledger, quota_items, hold_items, class_items = items[:5]
    quota = TenantQuota()
    if quota_items:
        quota = TenantQuota.parse(from_json(quota_items[0].value, limits_key(tenant)))
    class_name = quota.quota_class or DEFAULT_CLASS
    wanted = class_key(class_name)
    class_limits: dict[str, int] | None = None
    class_mod = 0
    for item in class_items:
        if item.key == wanted:
            class_limits = limits(from_json(item.value, wanted).get("limits", {}), wanted)
            class_mod = item.mod_revision
    account = Account()
    if ledger:
        account = Account.parse(from_json(ledger[0].value, ledger_key(tenant)))
    prefix = holds_prefix(tenant)
    holds = {
        item.key[len(prefix) :]: Hold.parse(
            item.key[len(prefix) :], from_json(item.value, item.key), item.create_revision
        )
        for item in hold_items
    }
    view = TenantView(
        tenant=tenant,
        seq_mod=seq[0].mod_revision if seq else 0,
        quota=quota,
        class_name=class_name,
        class_mod=class_mod,
        limits=EffectiveLimits.resolve(quota, class_limits),
        account=account,
        holds=holds,
        revision=revision,
        reserved=Reserved(holds.values()),
    )
    for read in items[5:]:
        for found in read:
            rid = found.key.rsplit("/", 1)[-1]
            view.done[rid] = Settled.parse(rid, from_json(found.value, found.key))
    return view
