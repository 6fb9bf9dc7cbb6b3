"""The plan: every member of a VNF on a site, a host and a NUMA cell — or why not.

``Planner.plan`` runs nomad's pipeline per VDU (``feasible`` checkers → ``score``), then
searches assignments for the whole group at once: members of the most constrained VDU
first, sites in score order, and within a site every host and NUMA cell that holds the
member, with backtracking when an anti-affinity rule, a latency bound between members, a
minimum number of sites or a shared host's or cell's capacity leaves a later member
nowhere to go. Greedy member-by-member placement fails exactly there (three members,
three regions, one region nearly full; or an early member on the only cell with the VFs
a later one needs); backtracking does not. Hosts and cells with identical free counters
are tried once (symmetry), so the search stays within its budget of attempts.

Invariants: a feasible ``PlanResult`` satisfies every constraint of the descriptor and
never takes more than a cell has free; the snapshot is left exactly as it was found (the
search holds tentative claims and gives every one of them back). "No feasible plan" is
data: the result carries every filtered site's and rejected host's reason, and a rejected
host's reason says whether the site lacked the capacity or the VNF's own members took it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from broker.models.vnf import Descriptor, Member, Vdu, members as expand
from broker.placement import claims as cl
from broker.placement import feasible, score
from broker.placement.feasible import SiteFilter
from broker.placement.snapshot import SiteView, Snapshot

EXPLAIN_LIMIT = 50


@dataclass(frozen=True, slots=True)
class Assignment:
    member: Member
    site: str
    claim: cl.Claim
    score: float


@dataclass(slots=True)
class PlanResult:
    feasible: bool
    assignments: tuple[Assignment, ...] = ()
    reason: str = ""
    revisions: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Site → (inventory mod_revision, claims mod_revision) the plan was made against."""
    filters: dict[str, SiteFilter] = field(default_factory=dict)
    host_reasons: dict[str, dict[str, str]] = field(default_factory=dict)
    """VDU → site → why no host of a site that passed the site checkers fits."""
    attempts: int = 0
    refused: dict[str, dict[str, int]] = field(default_factory=dict)
    """Member → what refused it, counted over the sites the search tried it on."""
    quota: str = ""
    """Why the tenant's quota refuses the VNF (``feasible.QuotaChecker``, tenant-wide)."""

    def sites(self) -> list[str]:
        return sorted({a.site for a in self.assignments})

    def explain(self, snap: Snapshot, limit: int = EXPLAIN_LIMIT) -> dict[str, Any]:
        """Every decision with its reason: chosen, filtered sites, rejected hosts."""
        vdus: dict[str, Any] = {}
        for name, filt in self.filters.items():
            dropped = np.flatnonzero(~filt.mask).tolist()
            filtered = [
                {"site": snap.order[i].id, "reason": filt.reason(snap, snap.order[i])}
                for i in dropped[:limit]
            ]
            rejected = self.host_reasons.get(name, {})
            vdus[name] = {
                "sites_total": len(filt.mask),
                "sites_feasible": int(np.count_nonzero(filt.mask)),
                "dropped_by": filt.counts(),
                "filtered": filtered,
                "filtered_omitted": max(0, len(dropped) - limit),
                "hosts_rejected": [
                    {"site": s, "reason": r} for s, r in list(rejected.items())[:limit]
                ],
            }
        out: dict[str, Any] = {
            "feasible": self.feasible,
            "reason": self.reason,
            "assignments": [assignment_json(snap, a) for a in self.assignments],
            "vdus": vdus,
            "search": {"attempts": self.attempts, "refused": self.refused},
        }
        if self.quota:
            out["quota"] = self.quota
        return out


def assignment_json(snap: Snapshot, a: Assignment) -> dict[str, Any]:
    site = snap.sites.get(a.site)
    region = site.spec.region if site is not None and site.spec is not None else ""
    return {
        "member": a.member.name,
        "vdu": a.member.vdu,
        "role": a.member.role,
        "site": a.site,
        "region": region,
        "host": a.claim.host,
        "numa_cell": a.claim.cell,
        "score": round(a.score, 4),
    }


@dataclass(slots=True)
class _Group:
    """One VDU's members with their ranked candidate sites."""

    vdu: Vdu
    ask: feasible.Ask
    candidates: list[int]
    scores: list[float]


class _Search:
    """Depth-first assignment with backtracking over sites, hosts and NUMA cells; holds
    tentative claims on the snapshot.

    A member's options at a site are every (host, cell) that holds it, hosts in the
    strategy's order. Two hosts that hold no member of this VNF and have the same free
    counters are interchangeable, as are two such cells of one host (``claims.options``):
    a host is skipped when a twin with a lower index was tried, so backtracking on a site
    of 50 empty hosts costs one host, not 50. Members of one VDU are interchangeable too
    (same need, same rules, never on one host): once the search has backtracked, each
    takes a (site rank, host index) above that of the previous member of its VDU, so the
    5! orders of five UPF members on five hosts are tried once. Every plan has such a
    sorted twin (and a twin host of lower index keeps it sorted), so no plan is lost; the
    first descent is left free, so a plan found without backtracking is the one it was.
    """

    def __init__(
        self,
        snap: Snapshot,
        desc: Descriptor,
        order: list[Member],
        groups: dict[str, _Group],
        vnf_id: str,
        budget: int,
    ) -> None:
        self.snap, self.desc, self.order, self.groups = snap, desc, order, groups
        self.vnf_id, self.budget = vnf_id, budget
        self.chosen: list[Assignment] = []
        self.attempts = 0
        self.deepest = 0
        self.host_reasons: dict[str, dict[str, str]] = {}
        self.blocked: dict[int, Counter[str]] = {}
        """Member index → what refused it at each site it was tried on, counted."""
        self.example: dict[int, tuple[str, str]] = {}
        """Member index → (site, why) of the last site whose hosts refused it."""
        self._no_fit: set[tuple[str, int]] = set()
        self._alone: dict[tuple[str, int], AloneView] = {}
        """(VDU, site) → the hosts a member fits without this VNF's other claims."""
        self._keys: list[tuple[int, int]] = []
        """(site rank, host index) of each chosen member, for symmetry breaking."""
        self._host_index: dict[int, dict[str, int]] = {}
        self._backtracked = False
        self._scopes = _conflicts(desc, order)
        self._between = desc.latency.between_members_max_ms

    def run(self) -> bool:
        try:
            return self._place(0)
        finally:
            for a in reversed(self.chosen):
                self.snap.sites[a.site].hold(a.claim, -1)

    def _place(self, i: int) -> bool:
        if i == len(self.order):
            return True
        self.deepest = max(self.deepest, i)
        member = self.order[i]
        group = self.groups[member.vdu]
        floor = (-1, -1)
        if self._backtracked and i and self.order[i - 1].vdu == member.vdu:
            floor = self._keys[i - 1]
        for rank, idx in enumerate(group.candidates):
            if rank < floor[0]:
                continue
            if self.attempts >= self.budget:
                return False
            site = self.snap.order[idx]
            conflict = self._site_conflict(i, member, site)
            if conflict:
                self._block(i, conflict)
                continue
            self.attempts += 1
            first = True
            above = floor[1] if rank == floor[0] else -1
            for claim in self._options(i, member, site, above):
                if not first:
                    if self.attempts >= self.budget:
                        return False
                    self.attempts += 1
                first = False
                site.hold(claim)
                self.chosen.append(Assignment(member, site.id, claim, group.scores[rank]))
                self._keys.append((rank, self._index(site)[claim.host]))
                if self._place(i + 1):
                    return True
                self._backtracked = True
                self._keys.pop()
                self.chosen.pop()
                site.hold(claim, -1)
        return False

    def _index(self, site: SiteView) -> dict[str, int]:
        found = self._host_index.get(site.idx)
        if found is None:
            found = self._host_index[site.idx] = {h.name: k for k, h in enumerate(site.hosts)}
        return found

    def _block(self, i: int, why: str) -> None:
        self.blocked.setdefault(i, Counter())[why] += 1

    def _site_conflict(self, i: int, member: Member, site: SiteView) -> str:
        """Why a site-level rule keeps ``member`` off ``site`` ("" when none does)."""
        for j, scope in self._scopes[i]:
            if scope == "host":
                continue  # decided per host
            other = self.chosen[j]
            peer = self.snap.sites[other.site]
            if site.domain(scope, "") == peer.domain(scope, other.claim.host):
                return f"anti-affinity ({scope}) with a member placed before it"
        if self._between is not None:
            for other in self.chosen:
                if self.snap.latency_between(site.id, other.site) > self._between:
                    return "latency to a member placed before it"
        vdu = self.desc.vdu(member.vdu)
        need_sites = vdu.redundancy.min_sites
        if need_sites > 1:
            used = {a.site for a in self.chosen if a.member.vdu == member.vdu}
            left = sum(1 for m in self.order[i + 1 :] if m.vdu == member.vdu)
            if len(used | {site.id}) + left < need_sites:
                return f"min_sites {need_sites} of {member.vdu}"
        return ""

    def _options(
        self, i: int, member: Member, site: SiteView, above: int = -1
    ) -> Iterator[cl.Claim]:
        """Every (host, cell) of ``site`` that holds ``member`` now, symmetric ones once,
        on hosts whose index is above ``above`` (symmetry between members of a VDU, which
        never share a host)."""
        mine = {a.claim.host for a in self.chosen if a.site == site.id}
        avoid = {
            self.chosen[j].claim.host
            for j, scope in self._scopes[i]
            if scope == "host" and self.chosen[j].site == site.id
        }
        key = (member.vdu, site.idx)
        if not mine and key in self._no_fit:
            self._block(i, _NO_HOST)
            return
        hosts = site.hosts
        start = 0
        if self.desc.preferences.strategy == "spread" and hosts:
            start = (len(site.claims) + i) % len(hosts)
        ref = f"{self.vnf_id}/{member.name}"
        tried: dict[tuple[object, ...], int] = {}
        """Signature of a fresh host tried → the lowest index among those tried with it."""
        offered = False
        index = self._index(site)
        for k in range(len(hosts)):
            host = hosts[(start + k) % len(hosts)]
            at = index[host.name]
            if host.name in avoid or at <= above:
                continue
            fresh = host.name not in mine
            sig = cl.host_signature(host) if fresh and tried else None
            # a twin of a host tried before is skipped only when that one has the lower
            # index: swapping them then keeps the members of a VDU in host order
            if sig is not None and tried.get(sig, at) < at:
                continue
            for claim in cl.options(host, member.need, ref):
                offered = True
                yield claim
            if fresh:
                sig = sig if sig is not None else cl.host_signature(host)
                tried[sig] = min(tried.get(sig, at), at)
        if not offered and above < 0:  # (hosts left out above say nothing of the site)
            if not mine:
                self._no_fit.add(key)
            self._refused(i, member, site, avoid)

    def _refused(self, i: int, member: Member, site: SiteView, avoid: set[str]) -> None:
        """Record what really kept every host of ``site`` from ``member``: the category
        at every refusal (set arithmetic on a cached view), the detail once per VDU and
        site."""
        held = [a for a in self.chosen if a.site == site.id]
        key = (member.vdu, site.idx)
        view = self._alone.get(key)
        if view is None:
            view = self._alone[key] = _alone(site, member, held)
        fits, _ = view
        why = _NO_HOST if not fits else _HOST_AA if fits <= avoid else _SHARED
        reasons = self.host_reasons.setdefault(member.vdu, {})
        if site.id not in reasons:
            reasons[site.id] = _detail(why, view, site, member, avoid, held)
        self._block(i, why)
        self.example[i] = (site.id, reasons[site.id])


_NO_HOST = "no host has the capacity"
_SHARED = "fits alone but not beside the members placed before it"
_HOST_AA = "the hosts it fits on hold members it must not share a host with"
AloneView = tuple[frozenset[str], list[tuple[str, str]]]


def _alone(site: SiteView, member: Member, held: list[Assignment]) -> AloneView:
    """The hosts of ``site`` that hold ``member`` without this VNF's tentative claims
    (``held``), and why the first three would not: constant for the whole search."""
    for a in held:
        site.hold(a.claim, -1)
    try:
        fits = frozenset(h.name for h in site.hosts if cl.fits(h, member.need, "") is not None)
        before = [(h.name, cl.why_not(h, member.need)) for h in site.hosts[:3]]
    finally:
        for a in held:
            site.hold(a.claim)
    return fits, before


def _detail(
    why: str,
    view: AloneView,
    site: SiteView,
    member: Member,
    avoid: set[str],
    held: list[Assignment],
) -> str:
    """Why no host of ``site`` takes ``member`` beside ``held``, host by host: the site's
    capacity when no host holds it even without this VNF, else the VNF's own members
    (host anti-affinity, or the capacity they took)."""
    fits, before = view
    need = member.need.describe()
    if why == _NO_HOST:
        more = len(site.hosts) - len(before)
        tail = f"; and {more} more hosts" if more > 0 else ""
        detail = "; ".join(f"{name}: {reason}" for name, reason in before)
        return f"no host has one NUMA node with {need}: {detail}{tail}"
    holders = ", ".join(f"{a.member.name} on {a.claim.host} cell {a.claim.cell}" for a in held)
    if why == _HOST_AA:
        return f"{need} fits only on hosts excluded by anti-affinity (host) with {holders}"
    shown = [h for h in site.hosts if h.name not in avoid][:3]
    now = "; ".join(f"{h.name}: {cl.why_not(h, member.need)}" for h in shown)
    first = min(fits)
    return f"{need} fits alone ({first}) but not beside {holders}: {now}"


def _conflicts(desc: Descriptor, order: Sequence[Member]) -> list[list[tuple[int, str]]]:
    """For each member (in search order), the earlier members it must not share a scope with."""
    rules: list[tuple[set[str], str]] = [({v.name}, v.scope) for v in desc.vdus]
    rules += [(set(r.targets), r.scope) for r in desc.anti_affinity]
    out: list[list[tuple[int, str]]] = []
    for i, m in enumerate(order):
        mine = []
        for j in range(i):
            other = order[j]
            for targets, scope in rules:
                if m.vdu in targets and other.vdu in targets:
                    mine.append((j, scope))
        out.append(mine)
    return out


class Planner:
    """Checkers → scorers → search, with the chains configurable (nomad's ``Stack``)."""

    def __init__(
        self,
        checkers: Sequence[feasible.Checker] | None = None,
        scorers: Sequence[score.Scorer] | None = None,
        *,
        budget: int = 5000,
    ) -> None:
        self.checkers = list(checkers) if checkers is not None else feasible.default_checkers()
        self.scorers = list(scorers) if scorers is not None else score.default_scorers()
        self.budget = budget

    def with_checkers(self, *more: feasible.Checker) -> Planner:
        """This planner with ``more`` checkers at the end of its chain (a request's own:
        its creator's scope, then the tenant's quota, last)."""
        return Planner([*self.checkers, *more], self.scorers, budget=self.budget)

    def plan(self, snap: Snapshot, desc: Descriptor, vnf_id: str) -> PlanResult:
        members = expand(desc)
        groups: dict[str, _Group] = {}
        filters: dict[str, feasible.SiteFilter] = {}
        for vdu in desc.vdus:
            ask = _ask(desc, vdu, members)
            filt = feasible.filter_sites(snap, ask, self.checkers)
            filters[vdu.name] = filt
            scores = score.combined(snap, ask, desc.preferences, self.scorers)
            idx = np.flatnonzero(filt.mask)
            ranked = idx[np.argsort(-scores[idx], kind="stable")]
            groups[vdu.name] = _Group(vdu, ask, ranked.tolist(), scores[ranked].tolist())
        by_size = sorted(desc.vdus, key=lambda v: len(groups[v.name].candidates))
        order = [m for v in by_size for m in members if m.vdu == v.name]
        search = _Search(snap, desc, order, groups, vnf_id, self.budget)
        ok = search.run()
        result = PlanResult(
            ok, filters=filters, host_reasons=search.host_reasons, attempts=search.attempts
        )
        result.refused = {order[i].name: dict(n) for i, n in sorted(search.blocked.items())}
        if ok:
            result.assignments = tuple(search.chosen)
            for site_id in result.sites():
                site = snap.sites[site_id]
                result.revisions[site_id] = (site.inv_rev, site.claims_rev)
        else:
            result.quota = feasible.refusal(self.checkers)
            result.reason = (
                f"quota: {result.quota}"
                if result.quota
                else _why(search, groups, filters, snap, self.budget)
            )
        return result


def _ask(desc: Descriptor, vdu: Vdu, members: list[Member]) -> feasible.Ask:
    need = next(m.need for m in members if m.vdu == vdu.name)
    bounds = tuple(b for b in desc.latency.to_locations if not b.targets or vdu.name in b.targets)
    return feasible.Ask(vdu, need, tuple(sorted(desc.selectors.items())), bounds)


def _why(
    search: _Search,
    groups: dict[str, _Group],
    filters: dict[str, feasible.SiteFilter],
    snap: Snapshot,
    budget: int,
) -> str:
    deepest = min(search.deepest, len(search.order) - 1)
    member = search.order[deepest]
    group = groups[member.vdu]
    filt = filters[member.vdu]
    dropped = ", ".join(f"{n} by {c}" for c, n in filt.counts().items()) or "none"
    head = f"no feasible plan: member {member.name} ({member.need.describe()}) has nowhere to go"
    if search.attempts >= budget:
        head = f"no plan found within the search budget of {budget} attempts"
    blocked = search.blocked.get(deepest, Counter())
    why = "; ".join(f"{reason} ({n})" for reason, n in blocked.most_common())
    example = search.example.get(deepest)
    tail = f"; e.g. site {example[0]}: {example[1]}" if example else ""
    return (
        f"{head}; {len(group.candidates)} of {len(snap.order)} sites passed the checkers "
        f"(dropped: {dropped}); what refused it, counted over the sites tried: "
        f"{why or 'nothing was tried'}{tail}"
    )
