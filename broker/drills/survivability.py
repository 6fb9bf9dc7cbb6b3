"""Survivability (N+1): would the loss of each site, zone and region be absorbed?

A scope is survivable when no VNF would have an outage (a VNF that serves again only
once a replacement is built, ``rebuilt``, had one) and every VNF gets its redundancy back.
Every scope is one what-if (``whatif.run``), so the report says exactly what failover
would do for each loss: the VNFs that would lose service, those that would stay degraded
(a member that cannot be restored), and the headroom per resource class still needed.
Scopes are independent: each what-if gives back what it held before the next.

Invariant: computed from the snapshot alone; it writes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from broker.drills import whatif
from broker.failover.replace import Ranker
from broker.placement.plan import Planner
from broker.placement.snapshot import Snapshot
from broker.settings import BrokerSettings


def scopes(snap: Snapshot) -> Iterator[tuple[str, str, whatif.Scope]]:
    """(kind, name, scope) for every registered site, zone and region."""
    specs = [s.spec for s in snap.order if s.spec is not None]
    for spec in sorted(specs, key=lambda s: s.id):
        yield "site", spec.id, whatif.Scope(sites=(spec.id,))
    for zone in sorted({f"{s.region}/{s.zone}" for s in specs}):
        yield "zone", zone, whatif.Scope(zones=(zone,))
    for region in sorted({s.region for s in specs}):
        yield "region", region, whatif.Scope(regions=(region,))


def entry(kind: str, name: str, result: whatif.Result) -> dict[str, Any]:
    return {
        "scope_kind": kind,
        "scope": name,
        "survivable": result.absorbable,
        "affected": len(result.vnfs),
        "lose_service": [o.vnf for o in result.vnfs if o.service != "kept"],
        "rebuilt": [o.vnf for o in result.vnfs if o.service == "restored"],
        "stay_degraded": [o.vnf for o in result.vnfs if o.service != "lost" and o.cannot_restore],
        "shortfall": result.shortfall,
    }


def report(
    snap: Snapshot,
    placed: Sequence[whatif.Placed],
    settings: BrokerSettings,
    *,
    images: Mapping[str, Collection[str]] | None = None,
    quota_free: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, Any]:
    """Every scope's entry, and the totals."""
    ranker = Ranker(snap, Planner())
    index = whatif.by_site(placed)
    rows = [
        entry(
            kind,
            name,
            whatif.run(
                snap,
                placed,
                scope,
                settings,
                images=images,
                quota_free=quota_free,
                index=index,
                ranker=ranker,
            ),
        )
        for kind, name, scope in scopes(snap)
    ]
    return {
        "scopes": rows,
        "survivable": all(r["survivable"] for r in rows),
        "not_survivable": [f"{r['scope_kind']}:{r['scope']}" for r in rows if not r["survivable"]],
        "vnfs": len(placed),
    }


KIND_ORDER = ("site", "zone", "region")


def _untouched(row: Mapping[str, Any]) -> bool:
    return bool(row["survivable"]) and not row["affected"] and not row["shortfall"]


def pack(out: Mapping[str, Any]) -> dict[str, Any]:
    """The report as stored: a scope whose loss touches no VNF and needs no headroom is
    kept by name only (``untouched``, per kind). At 10,000 sites the full rows were
    ~1.4 MB, at etcd's request limit and rewritten on every change; most scopes of a
    large federation hold no VNF. ``unpack`` gives the report back row for row."""
    untouched: dict[str, list[str]] = {}
    rows = []
    for row in out["scopes"]:
        if _untouched(row):
            untouched.setdefault(row["scope_kind"], []).append(row["scope"])
        else:
            rows.append(row)
    return {**out, "scopes": rows, "untouched": untouched}


def unpack(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The report ``pack`` stored, its rows in ``report``'s order (kind, then name)."""
    untouched: Mapping[str, list[str]] = stored.get("untouched", {})
    rows = list(stored["scopes"]) + [
        entry(kind, name, whatif.Result([], [], [], {}))
        for kind, names in untouched.items()
        for name in names
    ]
    rows.sort(key=lambda r: (KIND_ORDER.index(r["scope_kind"]), r["scope"]))
    return {k: v for k, v in stored.items() if k != "untouched"} | {"scopes": rows}
