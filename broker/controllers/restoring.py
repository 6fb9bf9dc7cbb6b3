"""The quota and claims bookkeeping of one failover step (issue 10 restore).

``Booking.settle`` turns what one step of a VNF's machines did into the ledger's and the
claims' terms, before the step's transaction is written:

- a replacement that reports READY gets its usage booked at its site (its reservation,
  kept under the record's ``extra`` while it builds, is committed) and its claim marked
  ready; its lost predecessor's replacement slot is freed (``finished``); a member rebuilt
  at its own site (same key) had its usage booked already: its claim is marked ready and
  its slot freed;
- a ``Release`` (the member's site confirmed its deletion, or the operator forgot the
  site) gives the member's usage back at its old site (a committed negative reservation,
  unique per member and placement) — or releases the reservation of a replacement that
  never became READY — and drops its claim and its placement entries;
- the record's members follow the machines (roles, READY, the released ones gone).

Invariants: usage is given back only for a member whose deletion was confirmed, and only
once (ledger idempotency keys); a replacement's usage is booked only once it is READY, so
the record's members minus the ``replacing:`` ones are exactly what the ledger holds for
the VNF (the teardown gives back that and releases the rest).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Protocol

from broker.controllers import replacing
from broker.failover import machine
from broker.models import vnf as model
from broker.placement import claims as cl
from broker.placement import commit
from broker.placement.snapshot import Live, Snapshot
from broker.quotas.headroom import PREFIX, Headroom, SiteUsage
from broker.store import keys
from broker.store.protocol import Compare, KeyValue, Op, Put, Store, Target
from quota import errors as quota_errors

TEMPORARY = quota_errors.QuotaError
"""Any quota error while settling is retried with the step (refusals cannot happen here:
commit and give-back are of what was already admitted)."""


class Placed(Protocol):
    """A member placed somewhere (a machine's member, a record's member status)."""

    @property
    def name(self) -> str: ...
    @property
    def site(self) -> str: ...
    @property
    def placed_ms(self) -> int: ...


def gone_id(tenant: str, vnf_id: str, m: Placed) -> str:
    """The give-back of member ``m``'s usage: one id per member and placement."""
    return f"{tenant}/{PREFIX}{vnf_id}.{m.name}.{m.site}.{m.placed_ms}.gone"


class Booking:
    """One step's bookkeeping (see the module); ``checks`` go into its transaction."""

    def __init__(self, store: Store, fence: int, headroom: Headroom, live: Live) -> None:
        self.store, self.fence, self.headroom, self.live = store, fence, headroom, live
        self.snap = Snapshot()
        """The placement snapshot, once this step needs it (regions, claims)."""
        self.checks: list[Compare] = []
        self.finished: list[str] = []
        """Lost members whose replacement is READY: their replacement slots are free."""
        self._claims: list[Put] = []

    def usage(self, desc: model.Descriptor, m: machine.Member) -> dict[str, SiteUsage]:
        view = self.snap.sites.get(m.site)
        region = view.spec.region if view is not None and view.spec is not None else ""
        return {m.site: SiteUsage(region, model.member_deltas(desc).get(m.name, {}))}

    async def settle(
        self,
        rec: model.VnfRecord,
        desc: model.Descriptor,
        before: dict[str, machine.Vnf],
        after: dict[str, machine.Vnf],
        actions: list[tuple[str, machine.Action]],
        placement: KeyValue | None,
    ) -> tuple[model.VnfRecord, list[Put]]:
        """The record after this step, and the placement and claims writes it needs."""
        extra = dict(rec.extra)
        pend = replacing.pending(rec)
        old = {m.key: m for mach in before.values() for m in mach.members}
        new = {m.key: m for mach in after.values() for m in mach.members}
        ready: dict[str, dict[str, int]] = {}
        built = [k for k, m in new.items() if _built(k, m, old, pend)]
        if built or any(isinstance(a, machine.Release) for _, a in actions):
            self.snap = await self.live.current()
        for key in built:
            m = new[key]
            if key in pend:
                await self.headroom.commit(pend[key], self.usage(desc, m))
                del extra[replacing.REPLACING + key]
            ready.setdefault(m.site, {})[f"{rec.id}/{m.name}"] = int(time.time() * 1000)
        for site, marks in ready.items():
            await commit.mark_ready(self.store, self.fence, self.snap, site, marks)
        self.finished = [k for k, m in {**old, **new}.items() if _settled(m, new)]
        self.finished += built  # one rebuilt at its own site holds its slot under its own key
        doc: dict[str, Any] | None = json.loads(placement.value) if placement else None
        dropped: dict[str, set[str]] = {}
        for _, action in actions:
            if not isinstance(action, machine.Release) or action.key not in old:
                continue
            m = old[action.key]
            if action.key in pend:
                await self.headroom.release(pend[action.key])
                extra.pop(replacing.REPLACING + action.key, None)
            elif rec.reservation:
                await self.headroom.uncommit(gone_id(rec.tenant, rec.id, m), self.usage(desc, m))
            dropped.setdefault(m.site, set()).add(f"{rec.id}/{m.name}")
            if doc is not None:
                doc = replacing.placement_without(doc, rec.id, m.name, m.site)
        ops = self._drop_claims(dropped)
        if doc is not None and dropped:
            ops.append(Put(keys.placement(rec.id), json.dumps(doc, separators=(",", ":")).encode()))
        return dataclasses.replace(rec, members=_members(rec, new), extra=extra), ops

    def _drop_claims(self, dropped: dict[str, set[str]]) -> list[Put]:
        for site_id, gone in sorted(dropped.items()):
            view = self.snap.sites.get(site_id)
            if view is None or not gone & view.claims.keys():
                continue
            kept = {k: c for k, c in view.claims.items() if k not in gone}
            self.checks.append(Compare(keys.claims(site_id), Target.MOD, Op.EQUAL, view.claims_rev))
            self._claims.append(cl.put(site_id, kept))
        return list(self._claims)

    def landed(self, revision: int) -> None:
        """The step's transaction landed at ``revision``: the snapshot takes its claims."""
        for put in self._claims:
            self.snap.apply(put.key, put.value, revision)


def _built(
    key: str, m: machine.Member, before: dict[str, machine.Member], pend: dict[str, str]
) -> bool:
    """Whether ``m`` is a replacement that turned READY in this step: a new member whose
    reservation is pending, or one rebuilt at its own site (not READY before)."""
    if not m.ready or m.condemned:
        return False
    was = before.get(key)
    return key in pend or (was is not None and not was.ready and m.placed_ms > 0)


def _settled(m: machine.Member, members: dict[str, machine.Member]) -> bool:
    """Whether ``m``'s replacement no longer builds: READY, itself lost, or gone."""
    if not m.replaced_by:
        return False
    new = members.get(m.replaced_by)
    return new is None or new.ready or bool(new.condemned)


def _members(
    rec: model.VnfRecord, machines: dict[str, machine.Member]
) -> tuple[model.MemberStatus, ...]:
    """The record's members as the machines have them: roles, READY, released ones gone."""
    out = []
    for st in rec.members:
        m = machines.get(f"{st.name}@{st.site}")
        if m is None or m.released:
            continue
        state = "LOST" if m.condemned else ("READY" if m.ready else st.state)
        out.append(dataclasses.replace(st, role=m.role, state=state))
    return tuple(out)
