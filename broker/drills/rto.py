"""Measured recovery times kept for the what-if's estimates (``reports/rto``).

Two samples are kept, each the last ``WINDOW`` values: ``promote`` (a member's loss to its
VNF's ``vnf.failover_completed``: a standby reported active) and ``restore`` (the loss to
``vnf.healed``: redundancy back). Detection is not in them: the what-if adds
``health.down_after`` itself. They come from live drills (the report's measured values,
when the drill ends) and from real failovers (the event log's ``vnf.member_lost`` paired
with the next completion of the same VNF, read by the leader's ``broker.controllers.rtofeed``).
``estimates`` gives the what-if their p99s; a sample nobody measured yet is absent, and
the what-if falls back to settings.

Invariant: pure; a value is counted once — a real failover's pair only when its completion
event sorts after the ``events_after`` cursor the stored document carries, which advances
in the same write.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from broker.drills.report import HEALED, LOST, PROMOTED, percentile
from broker.models.event import Event

WINDOW = 200
"""Values kept per sample: recent enough to follow the federation, enough for a p99."""
KINDS = {PROMOTED: "promote", HEALED: "restore"}


def estimates(raw: bytes | None) -> dict[str, float]:
    """The stored document's p99s as ``whatif.Rto.from_settings`` takes them."""
    if not raw:
        return {}
    doc = json.loads(raw)
    out = {}
    for name in ("promote", "restore"):
        p99 = doc.get(f"{name}_s")
        if isinstance(p99, int | float):
            out[f"{name}_s"] = float(p99)
    return out


def merge(
    doc: Mapping[str, Any], promote: Iterable[float], restore: Iterable[float], **meta: Any
) -> dict[str, Any]:
    """``doc`` with the new values appended (the last ``WINDOW`` kept), its p99s, ``meta``."""
    out = {**doc, **meta}
    for name, new in (("promote", promote), ("restore", restore)):
        kept = [*doc.get(f"{name}_samples", ()), *new][-WINDOW:]
        out[f"{name}_samples"] = kept
        if kept:
            out[f"{name}_s"] = percentile(kept, 99)
    return out


def from_report(rep: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """A drill report's measured promotions (RTO > 0) and restorations."""
    promote = [r["rto_s"] for r in rep.get("vnfs", ()) if _positive(r.get("rto_s"))]
    restore = [
        r["redundancy_restored_s"]
        for r in rep.get("vnfs", ())
        if _positive(r.get("redundancy_restored_s"))
    ]
    return promote, restore


def from_events(events: Sequence[Event], after: str) -> tuple[list[float], list[float]]:
    """Real failovers' promotions and restorations: each ``vnf.member_lost`` not caused
    by a drill, to the first completion of each kind that follows it for the same VNF,
    counted when that completion's id sorts after ``after``. ``events`` in id order."""
    lost: dict[str, int] = {}
    done: dict[str, set[str]] = {}
    out: dict[str, list[float]] = {"promote": [], "restore": []}
    for e in events:
        if e.kind == LOST:
            if "drill" in e.message:
                lost.pop(e.subject, None)
            elif e.subject not in lost:
                lost[e.subject], done[e.subject] = e.at_ms, set()
            continue
        name = KINDS.get(e.kind)
        if name is None or e.subject not in lost or name in done[e.subject]:
            continue
        done[e.subject].add(name)
        if e.id > after:
            out[name].append(round((e.at_ms - lost[e.subject]) / 1000, 3))
        if name == "restore":
            del lost[e.subject]
    return out["promote"], out["restore"]


def _positive(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0
