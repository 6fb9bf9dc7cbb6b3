"""Planning one tenant's share of a group-committed batch (pure, over a cached view).

Invariant 7 is decided here for each request in order: a reservation is admitted
against the view *plus* every earlier request of the same batch, so the batch as a whole
never exceeds a limit, and the ledger writes it only under conditions proving the view
is still current. Nothing here does I/O.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from quota import admission, errors, kv
from quota.layout import TenantView, done_key, hold_key
from quota.models import Hold, Reservation, ReservationId, Settled, TenantId, to_json


@dataclass(slots=True, eq=False)
class Request:
    op: str  # "reserve" | "commit" | "release" | "renew"
    tenant: TenantId
    rid: ReservationId
    future: asyncio.Future[Any]
    deltas: dict[str, int] = field(default_factory=dict)
    ttl: int = 0
    site: str | None = None
    region: str = ""
    explicit: bool = False  # the caller gave the idempotency key
    split: dict[str, tuple[str, dict[str, int]]] | None = None
    """commit only: site -> (region, amounts) when the usage lands at several sites."""

    # ops one request may add to a transaction branch (a tenant adds up to 3 more)
    COST = 2



class TenantPlan:
    """Applies one tenant's requests, in order, to a copy of its view."""

    def __init__(
        self,
        view: TenantView,
        done_ttl: int,
        leases: dict[int, tuple[int, int]],
        now_ms: int,
        reloaded: bool,
    ) -> None:
        self.view = view
        # changes to view.holds, applied only once the transaction lands (no O(holds) copy)
        self.added: dict[str, Hold] = {}
        self.renewed: dict[str, Hold] = {}  # rewritten on a new lease: same create_revision
        self.removed: set[str] = set()
        self.reserved = view.reserved.copy()
        self.account = view.account
        self.done_ttl = done_ttl
        self.leases = leases
        self.now_ms = now_ms
        self.reloaded = reloaded
        self.conds: list[kv.Cond] = []
        self.writes: list[kv.Write | kv.Remove] = []
        self.reads: list[kv.Read] = []
        self.answers: list[tuple[Request, Any]] = []
        self.reload = False
        self.lookups: set[str] = set()
        self.settled: dict[str, Settled] = {}

    def hold(self, rid: str) -> Hold | None:
        if rid in self.added:
            return self.added[rid]
        if rid in self.removed:
            return None
        return self.renewed.get(rid) or self.view.holds.get(rid)

    def landed(self, revision: int) -> TenantView:
        """The view once this plan's transaction landed at ``revision`` (updated in place:
        nothing else touches a tenant while its batch is in flight)."""
        view = self.view
        for rid in self.removed:
            view.holds.pop(rid, None)
        for rid, hold in self.added.items():
            view.holds[rid] = _at(hold, revision)
        for rid, hold in self.renewed.items():
            if rid not in self.removed:
                view.holds[rid] = hold
        view.account, view.reserved = self.account, self.reserved
        view.seq_mod = view.revision = revision
        return view

    def add(self, request: Request) -> None:
        try:
            if request.op == "reserve":
                self._reserve(request)
            elif request.op == "renew":
                self._renew(request)
            else:
                self._settle(request)
        except errors.QuotaError as exc:
            self.answers.append((request, exc))

    def _known(self, rid: str) -> Settled | None:
        return self.settled.get(rid) or self.view.done.get(rid)

    def _reserve(self, r: Request) -> None:
        tenant = self.view.tenant
        existing = self.hold(r.rid)
        settled = self._known(r.rid)
        if existing is not None or settled is not None:
            if existing is not None:
                have, state, site = existing.deltas, "reserved", existing.site
                ends = existing.expires_ms
            else:
                assert settled is not None
                have, state, site, ends = settled.deltas, settled.state, settled.site, 0
            if dict(have) != r.deltas:
                raise errors.ReservationConflict(
                    tenant, r.rid, f"the key was used for other amounts: {dict(have)}"
                )
            self.answers.append(
                (r, Reservation(tenant, r.rid, r.deltas, site, ends, state, self.view.revision))
            )
            return
        try:
            admission.check(
                tenant, self.view.limits, self.account, self.reserved, r.deltas,
                site=r.site or "", region=r.region,
            )
        except errors.QuotaExceeded:
            if not self.reloaded:
                # Refuse only on what the store holds now: a refusal writes nothing, so
                # nothing else makes this replica re-read a limit another replica raised
                # (or a hold that expired, or usage quota sync gave back).
                self.reload = True
                return
            raise
        lease, end_ms = self.leases[r.ttl]
        hold = Hold(r.rid, dict(r.deltas), r.site or "", r.region, end_ms, 0)
        self.added[r.rid] = hold
        self.reserved.add(hold)
        self.writes.append(kv.Write(hold_key(tenant, r.rid), to_json(hold.dump()), lease))
        if r.explicit:
            self.conds.append(kv.Created(done_key(tenant, r.rid), 0))
            self.reads.append(kv.Read(done_key(tenant, r.rid)))
        self.answers.append((r, Reservation(tenant, r.rid, r.deltas, hold.site, end_ms)))

    def _settle(self, r: Request) -> None:
        tenant = self.view.tenant
        state = "committed" if r.op == "commit" else "released"
        hold = self.hold(r.rid)
        if hold is None:
            settled = self._known(r.rid)
            if settled is None and r.rid not in self.view.looked:
                self.lookups.add(r.rid)  # read its settled record, then plan again
                return
            if settled is None:
                if r.op == "release":  # expired or never made: nothing is held either way
                    self.answers.append((r, Settled(r.rid, "released", {}, "")))
                    return
                raise errors.ReservationExpired(tenant, r.rid)
            if settled.state != state:
                raise errors.ReservationConflict(tenant, r.rid, f"it was already {settled.state}")
            self.answers.append((r, settled))
            return
        if hold.create_revision == 0:
            raise errors.ReservationConflict(tenant, r.rid, "settled in the batch that made it")
        site = hold.site if r.site is None else r.site
        region = r.region or hold.region
        if r.split is not None:
            _check_split(tenant, r.rid, hold, r.split)
            site = ",".join(sorted(r.split))
        self.removed.add(r.rid)
        self.reserved.remove(hold)
        if state == "committed" and r.split is not None:
            for at, (at_region, amounts) in sorted(r.split.items()):
                self.account = self.account.apply(at, at_region, amounts)
        elif state == "committed":
            self.account = self.account.apply(site, region, hold.deltas)
        settled = Settled(r.rid, state, hold.deltas, site)
        self.settled[r.rid] = settled
        lease, _ = self.leases[self.done_ttl]
        self.conds.append(kv.Created(hold_key(tenant, r.rid), hold.create_revision))
        self.reads.append(kv.Read(hold_key(tenant, r.rid)))
        self.writes += [
            kv.Remove(hold_key(tenant, r.rid)),
            kv.Write(done_key(tenant, r.rid), to_json(settled.dump()), lease),
        ]
        self.answers.append((r, settled))


    def _renew(self, r: Request) -> None:
        """Move a live hold to a fresh lease (same id, amounts and create revision).

        Only a hold that still exists is renewed (the condition on its create revision
        makes sure of that), so a renewal never brings back quota that expiry freed.
        """
        tenant = self.view.tenant
        hold = self.hold(r.rid)
        if hold is None:
            settled = self._known(r.rid)
            if settled is None and r.rid not in self.view.looked:
                self.lookups.add(r.rid)
                return
            if settled is None:
                raise errors.ReservationExpired(tenant, r.rid)
            raise errors.ReservationConflict(tenant, r.rid, f"it was already {settled.state}")
        if hold.create_revision == 0:
            raise errors.ReservationConflict(tenant, r.rid, "renewed in the batch that made it")
        lease, end_ms = self.leases[r.ttl]
        renewed = Hold(hold.id, hold.deltas, hold.site, hold.region, end_ms, hold.create_revision)
        self.renewed[r.rid] = renewed
        self.conds.append(kv.Created(hold_key(tenant, r.rid), hold.create_revision))
        self.reads.append(kv.Read(hold_key(tenant, r.rid)))
        self.writes.append(kv.Write(hold_key(tenant, r.rid), to_json(renewed.dump()), lease))
        self.answers.append(
            (r, Reservation(tenant, r.rid, hold.deltas, hold.site, end_ms, "reserved"))
        )


def _check_split(
    tenant: str, rid: str, hold: Hold, split: dict[str, tuple[str, dict[str, int]]]
) -> None:
    """A commit split over sites must add up to exactly what the hold reserved."""
    total: dict[str, int] = {}
    for _, amounts in split.values():
        for cls, n in amounts.items():
            total[cls] = total.get(cls, 0) + n
    if {c: n for c, n in total.items() if n} != {c: n for c, n in hold.deltas.items() if n}:
        raise errors.ReservationConflict(
            tenant, rid, f"the per-site split {total} does not add up to {dict(hold.deltas)}"
        )


def _at(hold: Hold, revision: int) -> Hold:
    return Hold(hold.id, hold.deltas, hold.site, hold.region, hold.expires_ms, revision)
