"""What-if: the failover decisions a scope's loss would bring, computed, never carried out.

For each placed VNF with a member in the scope (sites, zones, regions or ``site/host``
hosts), the VNF's own failover machines (``failover.policy.machines``) are stepped with
the loss of those members past their grace, exactly as the failover controller steps
them; their ``SetRole`` actions are the promotions and their ``Replace`` actions are
answered by ``failover.replace.decide`` on the snapshot with the scope removed — the
decision the controller's restore makes. Replacements are held on the snapshot while the
what-if runs (VNFs of higher priority first), so later ones see the capacity earlier ones
took, and given back at the end.

Invariant: ``run`` leaves the snapshot exactly as it found it (the scope's sites are
marked down, its hosts hidden and the replacements held only inside it) and writes
nothing anywhere; it is synchronous, so on the event loop nobody sees the overlay.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker import errors
from broker.drills import imagetable
from broker.failover import machine, policy
from broker.failover import replace as rp
from broker.models import vnf as model
from broker.placement import claims as cl
from broker.placement.plan import Planner
from broker.placement.snapshot import Snapshot
from broker.settings import BrokerSettings

KINDS = ("sites", "zones", "regions", "hosts")


@dataclass(frozen=True, slots=True)
class Scope:
    """What is lost: sites, zones (``region/zone``), regions, hosts (``site/host``)."""

    sites: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Scope:
        unknown = set(data) - set(KINDS)
        if unknown:
            raise errors.InvalidInput("scope", f"unknown scope kind {', '.join(sorted(unknown))}")
        out: dict[str, tuple[str, ...]] = {}
        for kind in KINDS:
            values = data.get(kind, [])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise errors.InvalidInput("scope", f"{kind} must be a list of names")
            out[kind] = tuple(values)
        scope = cls(**out)
        if not any(out.values()):
            raise errors.InvalidInput("scope", "the scope names nothing to lose")
        return scope

    def lost(self, snap: Snapshot) -> tuple[set[str], set[tuple[str, str]]]:
        """(site ids lost whole, (site, host) pairs lost) in ``snap``. Costs what the
        scope names: only a zone or a region walks the snapshot's sites (the survivability
        report asks this once per site, so a walk per site scope was quadratic)."""
        sites = {s for s in self.sites if s in snap.sites}
        if self.regions or self.zones:
            for site in snap.order:
                spec = site.spec
                if spec is not None and (
                    spec.region in self.regions or f"{spec.region}/{spec.zone}" in self.zones
                ):
                    sites.add(site.id)
        hosts = {tuple(h.split("/", 1)) for h in self.hosts if "/" in h}
        return sites, {(s, h) for s, h in hosts if s not in sites}


@dataclass(frozen=True, slots=True)
class Selector:
    """Which VNFs a drill takes: all of ``tenants``, ``vnfs`` and ``labels`` that are set
    must match (each empty: any); ``labels`` are the descriptor's, every pair present."""

    tenants: tuple[str, ...] = ()
    vnfs: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> Selector:
        """From a drill's stored (or requested) ``tenants``, ``vnfs``, ``selector.labels``."""
        labels = (doc.get("selector") or {}).get("labels") or {}
        return cls(
            tuple(doc.get("tenants") or ()),
            tuple(doc.get("vnfs") or ()),
            tuple(sorted(labels.items())),
        )

    def matches(self, record: model.VnfRecord) -> bool:
        have = record.descriptor.get("labels") or {}
        return (
            (not self.tenants or record.tenant in self.tenants)
            and (not self.vnfs or record.id in self.vnfs)
            and all(have.get(k) == v for k, v in self.labels)
        )


@dataclass(frozen=True, slots=True)
class Placed:
    """One placed VNF: its record (members with site/host/state) and parsed descriptor."""

    record: model.VnfRecord
    desc: model.Descriptor


@dataclass(frozen=True, slots=True)
class Rto:
    """Estimated recovery times: detection (site DOWN) + grace, then promotion or rebuild."""

    detect_s: float
    promote_s: float = 2.0
    restore_s: float = 120.0

    @classmethod
    def from_settings(cls, settings: BrokerSettings, measured: Mapping[str, float] = {}) -> Rto:
        """Measured p99s (``promote_s``/``restore_s``) when the controller kept them, else
        settings: a rebuild is bounded by ``vnf.ready_timeout_s``."""
        return cls(
            settings.health.down_after,
            measured.get("promote_s", 2.0),
            measured.get("restore_s", settings.vnf.ready_timeout_s),
        )


@dataclass(slots=True)
class Outcome:
    """One affected VNF's fate: see ``Result`` for the lists' shapes."""

    vnf: str
    tenant: str
    service: str = "kept"
    """kept (a member still serves), restored (by a replacement), lost."""
    state: str = "ACTIVE"
    promotions: list[dict[str, str]] = field(default_factory=list)
    replacements: list[dict[str, Any]] = field(default_factory=list)
    cannot_restore: list[dict[str, Any]] = field(default_factory=list)
    rto_s: float | None = 0.0
    images: list[dict[str, Any]] = field(default_factory=list)
    """Per replacement: its image at the target site, or the replication it waits for
    (``imagetable``; empty when the what-if was given no catalogue)."""


@dataclass(slots=True)
class Result:
    sites: list[str]
    hosts: list[str]
    vnfs: list[Outcome]
    shortfall: dict[str, int]
    """Per resource class, what the capacity-bound replacements still lacked."""

    @property
    def absorbable(self) -> bool:
        """Every affected VNF kept serving (no outage) and got its redundancy back."""
        return all(o.service == "kept" and not o.cannot_restore for o in self.vnfs)

    def to_json(self) -> dict[str, Any]:
        return {
            "absorbable": self.absorbable,
            "lost_sites": self.sites,
            "lost_hosts": self.hosts,
            "shortfall": self.shortfall,
            "vnfs": [dataclasses.asdict(o) for o in self.vnfs],
        }


def by_site(placed: Sequence[Placed]) -> dict[str, list[Placed]]:
    """Site → the placed VNFs with a member there (``run``'s ``index``)."""
    out: dict[str, list[Placed]] = {}
    for p in placed:
        for site in {m.site for m in p.record.members}:
            out.setdefault(site, []).append(p)
    return out


@contextlib.contextmanager
def overlay(snap: Snapshot, sites: set[str], hosts: set[tuple[str, str]]) -> Iterator[None]:
    """The snapshot with ``sites`` down and ``hosts`` gone, restored on exit."""
    snap.ensure_arrays()
    idx = [snap.sites[s].idx for s in sites]
    was_up = snap.up[idx].copy()
    hidden: list[tuple[str, list[cl.HostView]]] = []
    for site_id in {s for s, _ in hosts}:
        site = snap.sites.get(site_id)
        if site is not None:
            hidden.append((site_id, site.hosts))
            site.hosts = [h for h in site.hosts if (site_id, h.name) not in hosts]
    snap.up[idx] = False
    try:
        yield
    finally:
        snap.up[idx] = was_up
        for site_id, kept in hidden:
            snap.sites[site_id].hosts = kept


def run(
    snap: Snapshot,
    placed: Sequence[Placed],
    scope: Scope,
    settings: BrokerSettings,
    *,
    select: Selector = Selector(),
    rto: Rto | None = None,
    images: Mapping[str, Collection[str]] | None = None,
    catalog: imagetable.Catalog | None = None,
    quota_free: Mapping[str, Mapping[str, int]] | None = None,
    planner: Planner | None = None,
    index: Mapping[str, Sequence[Placed]] | None = None,
    ranker: rp.Ranker | None = None,
) -> Result:
    """The what-if of losing ``scope`` for the VNFs ``select`` takes; see the module
    docstring. For many scopes in a
    row, ``index`` (``by_site`` of ``placed``) spares looking at every VNF, and one
    ``ranker`` (made before any scope) ranks each distinct ask once. ``images`` (site →
    images there) refuses sites without the image; ``catalog`` instead tells, per
    replacement, whether its image is there or how long replicating it would take (as
    restore does: it orders the replication and waits), and adds the wait to the RTO of
    a VNF whose service waits for that replacement."""
    sites, hosts = scope.lost(snap)
    run_ = _WhatIf(snap, settings, rto or Rto.from_settings(settings), images, quota_free)
    run_.catalog = catalog  # the table beside the decisions; never a filter
    if index is not None:
        near = {s for s, _ in hosts} | sites
        placed = list({p.record.id: p for s in near for p in index.get(s, ())}.values())
    affected = [
        p
        for p in placed
        if select.matches(p.record)
        and any(m.site in sites or (m.site, m.host) in hosts for m in p.record.members)
    ]
    affected.sort(key=lambda p: (-p.desc.priority, p.record.id))
    with overlay(snap, sites, hosts):
        if ranker is None:
            ranker = rp.Ranker(snap, planner or Planner())
        ranker.start.clear()  # what an earlier scope held is given back
        try:
            outcomes = [run_.vnf(ranker, p, sites, hosts) for p in affected]
        finally:
            for site_id, claim in reversed(run_.held):
                snap.sites[site_id].hold(claim, -1)
    return Result(sorted(sites), sorted(f"{s}/{h}" for s, h in hosts), outcomes, run_.shortfall)


class _WhatIf:
    def __init__(
        self,
        snap: Snapshot,
        settings: BrokerSettings,
        rto: Rto,
        images: Mapping[str, Collection[str]] | None,
        quota_free: Mapping[str, Mapping[str, int]] | None,
    ) -> None:
        self.snap, self.settings, self.rto, self.images = snap, settings, rto, images
        self.quota = {t: dict(q) for t, q in (quota_free or {}).items()}
        self.quota_bound = quota_free is not None
        self.held: list[tuple[str, cl.Claim]] = []
        self.catalog: imagetable.Catalog | None = None
        self.shortfall: dict[str, int] = {}

    def vnf(
        self, ranker: rp.Ranker, p: Placed, sites: set[str], hosts: set[tuple[str, str]]
    ) -> Outcome:
        rec, desc = p.record, p.desc
        out = Outcome(rec.id, rec.tenant)
        peers = [
            rp.Peer(m.vdu, m.site, m.host)
            for m in rec.members
            if m.site not in sites and (m.site, m.host) not in hosts
        ]
        serving, lost = True, False
        for vdu, mach in policy.machines(rec, desc, self.settings).items():
            mach, actions = self._lose(mach, sites, hosts)
            restored = False
            for action in actions:
                if isinstance(action, machine.SetRole) and action.role == machine.ACTIVE:
                    name, site = action.key.rsplit("@", 1)
                    out.promotions.append({"member": name, "site": site})
                elif isinstance(action, machine.Replace):
                    placed = self._replace(ranker, p, vdu, action, peers, out)
                    if placed is not None:
                        restored = True
                        peers.append(placed)
            if not any(m.serving and m.role == machine.ACTIVE for m in mach.members):
                serving = False
                lost |= not restored
        _verdict(out, serving, lost, self.rto)
        return out

    def _lose(
        self, mach: machine.Vnf, sites: set[str], hosts: set[tuple[str, str]]
    ) -> tuple[machine.Vnf, list[machine.Action]]:
        """The machine stepped as the controller would: each loss, then past its grace."""
        actions: list[machine.Action] = []
        for m in mach.members:
            if m.site in sites or (m.site, m.host) in hosts:
                result = machine.step(mach, machine.Lost(m.key, "drill: in scope"), 0)
                mach = result.vnf
                actions += result.actions
        result = machine.step(mach, machine.Tick(), mach.policy.grace_ms)
        return result.vnf, actions + list(result.actions)

    def _replace(
        self,
        ranker: rp.Ranker,
        p: Placed,
        vdu: str,
        action: machine.Replace,
        peers: list[rp.Peer],
        out: Outcome,
    ) -> rp.Peer | None:
        name = action.key.rsplit("@", 1)[0]
        need = model.need_of(p.desc, p.desc.vdu(vdu))
        ref = f"{p.record.id}/{name}"
        charge = model.member_deltas(p.desc).get(name, {})
        short = self._quota(p.record.tenant, charge)
        decision = (
            rp.Decision(None, kind=rp.QUOTA, reason=f"quota: {short}")
            if short
            else rp.decide(
                ranker, p.desc, ref, vdu, peers, action.avoid_sites, action.avoid_hosts, self.images
            )
        )
        if decision.claim is None:
            out.cannot_restore.append(
                {"member": name, "kind": decision.kind, "reason": decision.reason}
            )
            if decision.kind == rp.CAPACITY:
                for cls_, n in _classes(need).items():
                    self.shortfall[cls_] = self.shortfall.get(cls_, 0) + n
            return None
        claim = decision.claim
        self.snap.sites[decision.site].hold(claim)
        self.held.append((decision.site, claim))
        self._take_quota(p.record.tenant, charge)
        if self.catalog is not None:
            out.images.append(self.catalog.row(p.desc, vdu, name, decision.site))
        out.replacements.append(
            {
                "member": name,
                "role": action.role,
                "site": decision.site,
                "host": claim.host,
                "numa_cell": claim.cell,
            }
        )
        return rp.Peer(vdu, decision.site, claim.host)

    def _quota(self, tenant: str, charge: Mapping[str, int]) -> str:
        """Why the tenant's free quota (per quota class, ``model.member_deltas``'s) cannot
        hold one more member ("" when it can): the lost member's usage is given back only
        once it is deleted, after its replacement."""
        if not self.quota_bound:
            return ""
        free = self.quota.get(tenant, {})
        lacking = [
            f"{cls_} needs {n}, {free.get(cls_, 0)} free"
            for cls_, n in charge.items()
            if cls_ in free and free[cls_] < n
        ]
        return "; ".join(lacking)

    def _take_quota(self, tenant: str, charge: Mapping[str, int]) -> None:
        free = self.quota.get(tenant)
        if free is not None:
            for cls_, n in charge.items():
                if cls_ in free:
                    free[cls_] -= n


def _classes(need: model.Need) -> dict[str, int]:
    """A member's ask per resource class (the report's shortfall and quota's classes)."""
    out = {"pcpus" if need.dedicated else "vcpus": need.vcpus, "memory_mb": need.memory_mb}
    for net, n in need.vfs:
        out[f"vfs:{net}"] = n
    return out


def _verdict(out: Outcome, serving: bool, lost: bool, rto: Rto) -> None:
    if lost:
        out.service, out.state, out.rto_s = "lost", "FAILED", None
        return
    if not serving:
        out.service = "restored"
        wait = max((i["estimate_s"] for i in out.images), default=0.0)
        out.rto_s = round(rto.detect_s + rto.restore_s + wait, 3)
    elif out.promotions:
        out.rto_s = round(rto.detect_s + rto.promote_s, 3)
    out.state = "DEGRADED" if out.cannot_restore else "ACTIVE"
