"""Where a lost member's replacement goes: one pure decision on a placement snapshot.

``decide`` answers the machine's ``Replace`` action (issue 10 restore) for one member:
the site, host and NUMA cell its replacement takes, or why none can. It runs the
Planner's own site checkers and scorers (``Planner.checkers``/``Planner.scorers``),
then, in score order, the anti-affinity rules and the between-members latency bound
against the VNF's remaining members, the sites and hosts the machine says to avoid,
the image catalogue when one is given, and finally the exact host fit
(``claims.fits``). The failover controller and the what-if of a drill (invariant 14)
both call it, so a drill predicts exactly what a real loss would do.

Invariant: ``decide`` changes nothing on the snapshot; the caller holds the returned
claim (``SiteView.hold``) when it means to keep it, and gives it back when done.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from broker.models.vnf import Descriptor, Need, need_of
from broker.placement import claims as cl
from broker.placement import feasible, score
from broker.placement.plan import Planner
from broker.placement.snapshot import Snapshot

CAPACITY, ANTI_AFFINITY, LATENCY, IMAGE, QUOTA = (
    "capacity",
    "anti-affinity",
    "latency",
    "image",
    "quota",
)
"""The kinds of ``Decision.kind`` when no replacement is possible."""
CAPACITY_CHECKERS = ("numa-cores", "numa-memory", "sriov-vfs", "data-path")
"""The Planner's site checkers that refuse for want of capacity (the others: site state,
selectors, latency)."""


@dataclass(frozen=True, slots=True)
class Peer:
    """A remaining member of the same VNF: what the replacement must keep apart from."""

    vdu: str
    site: str
    host: str


@dataclass(frozen=True, slots=True)
class Decision:
    """A replacement's spot, or (``claim`` None) why there is none and of which ``kind``."""

    claim: cl.Claim | None
    site: str = ""
    kind: str = ""
    reason: str = ""


class Ranker:
    """The Planner's site filter and score for one VDU ask, cached per snapshot state.

    Within one what-if the federation's site columns do not change (held claims are
    checked exactly per host), so one ranking per distinct ask serves every VNF.
    """

    def __init__(self, snap: Snapshot, planner: Planner) -> None:
        self.snap, self.planner = snap, planner
        snap.ensure_arrays()
        self._up = snap.up.copy()
        """Sites up when the ranker was made: rankings are of these, so one ranker serves
        many scopes; ``decide`` skips the sites down now."""
        self._cache: dict[tuple[object, ...], tuple[list[int], dict[str, int]]] = {}
        self.start: dict[tuple[Need, int], int] = {}
        """(need, site index) → the first host that may still fit the need: capacity is
        only taken while a ranker lives (replacements held), so a host that did not fit
        never will (len(hosts): the site is full for it)."""

    def ranked(self, desc: Descriptor, vdu_name: str) -> tuple[list[int], dict[str, int]]:
        """(site indices passing every checker, best first; how many each checker dropped)."""
        vdu = desc.vdu(vdu_name)
        need = need_of(desc, vdu)
        bounds = tuple(
            b for b in desc.latency.to_locations if not b.targets or vdu.name in b.targets
        )
        prefs = desc.preferences
        key = (
            need,
            tuple(sorted(desc.selectors.items())),
            tuple((b.location, b.max_ms) for b in bounds),
            prefs.strategy,
            prefs.weights.utilization,
            prefs.weights.cost,
            prefs.weights.latency,
        )
        found = self._cache.get(key)
        if found is None:
            ask = feasible.Ask(vdu, need, tuple(sorted(desc.selectors.items())), bounds)
            live, self.snap.up = self.snap.up, self._up
            try:
                filt = feasible.filter_sites(self.snap, ask, self.planner.checkers)
                scores = score.combined(self.snap, ask, prefs, self.planner.scorers)
            finally:
                self.snap.up = live
            idx = np.flatnonzero(filt.mask)
            order = idx[np.argsort(-scores[idx], kind="stable")].tolist()
            found = self._cache[key] = (order, filt.counts())
        return found


def _scopes(desc: Descriptor, vdu: str) -> dict[str, set[str]]:
    """Peer VDU → the anti-affinity scopes the replacement of a ``vdu`` member must keep."""
    rules: list[tuple[set[str], str]] = [({v.name}, v.scope) for v in desc.vdus]
    rules += [(set(r.targets), r.scope) for r in desc.anti_affinity]
    out: dict[str, set[str]] = {}
    for targets, scope in rules:
        if vdu in targets:
            for other in targets:
                out.setdefault(other, set()).add(scope)
    return out


def decide(
    ranker: Ranker,
    desc: Descriptor,
    ref: str,
    vdu: str,
    peers: Sequence[Peer],
    avoid_sites: Collection[str] = (),
    avoid_hosts: Collection[str] = (),
    images: Mapping[str, Collection[str]] | None = None,
) -> Decision:
    """The replacement of member ``ref`` (``<vnf>/<member>``) of ``vdu``; see the module."""
    snap = ranker.snap
    order, dropped = ranker.ranked(desc, vdu)
    need = need_of(desc, desc.vdu(vdu))
    scopes = _scopes(desc, vdu)
    between = desc.latency.between_members_max_ms
    image = desc.vdu(vdu).sw_image
    refused: Counter[str] = Counter()
    forbidden = _forbidden(snap, peers, scopes)
    for idx in order:
        site = snap.order[idx]
        if site.id in avoid_sites or not snap.up[idx]:
            continue
        why = _site_conflict(snap, site.id, peers, forbidden, between)
        if not why and images is not None and image not in images.get(site.id, ()):
            why = IMAGE
        if why:
            refused[why] += 1
            continue
        avoid = set(avoid_hosts) | {
            p.host for p in peers if p.site == site.id and "host" in scopes.get(p.vdu, ())
        }
        claim = _fit(ranker, need, idx, avoid, ref)
        if claim is not None:
            return Decision(claim, site.id)
        refused[ANTI_AFFINITY if avoid - set(avoid_hosts) else CAPACITY] += 1
    return _refusal(need, len(order), dropped, refused, image)


def _fit(ranker: Ranker, need: Need, idx: int, avoid: set[str], ref: str) -> cl.Claim | None:
    """The first host of site ``idx`` (not in ``avoid``) that holds ``need`` now."""
    hosts = ranker.snap.order[idx].hosts
    start = first = ranker.start.get((need, idx), 0)
    for k in range(start, len(hosts)):
        host = hosts[k]
        if host.name in avoid:
            continue
        claim = cl.fits(host, need, ref)
        if claim is not None:
            ranker.start[(need, idx)] = first
            return claim
        if first == k:
            first = k + 1
    ranker.start[(need, idx)] = first
    return None


def _forbidden(
    snap: Snapshot, peers: Sequence[Peer], scopes: Mapping[str, set[str]]
) -> dict[str, set[str]]:
    """Anti-affinity scope (site and wider) → the domains the remaining members hold."""
    out: dict[str, set[str]] = {}
    for p in peers:
        peer = snap.sites.get(p.site)
        if peer is None:
            continue
        for scope in scopes.get(p.vdu, ()):
            if scope != "host":
                out.setdefault(scope, set()).add(peer.domain(scope, p.host))
    return out


def _site_conflict(
    snap: Snapshot,
    site_id: str,
    peers: Sequence[Peer],
    forbidden: Mapping[str, set[str]],
    between: float | None,
) -> str:
    site = snap.sites[site_id]
    for scope, held in forbidden.items():
        if site.domain(scope, "") in held:
            return ANTI_AFFINITY
    if between is not None:
        for p in peers:
            if snap.latency_between(site_id, p.site) > between:
                return LATENCY
    return ""


def _refusal(
    need: Need, passed: int, dropped: Mapping[str, int], refused: Counter[str], image: str
) -> Decision:
    """Why nothing took the replacement, the kind being what refused the most sites."""
    checks = ", ".join(f"{n} by {c}" for c, n in dropped.items() if n) or "none"
    tried = "; ".join(f"{why} ({n})" for why, n in refused.most_common()) or "no site left"
    short = refused[CAPACITY] + sum(dropped.get(c, 0) for c in CAPACITY_CHECKERS)
    if short or not (refused or dropped.get("latency")):
        kind = CAPACITY  # more headroom somewhere allowed would do
    else:
        kind = refused.most_common(1)[0][0] if refused else LATENCY
    extra = f" (image {image} absent)" if kind == IMAGE else ""
    return Decision(
        None,
        kind=kind,
        reason=(
            f"no site takes {need.describe()}{extra}: {passed} sites passed the checkers "
            f"(dropped: {checks}); refused by {tried}"
        ),
    )
