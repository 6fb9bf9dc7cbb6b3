"""A live drill's report: measured per VNF from the event log, totals, the timeline.

Measured, not estimated: the cut is the drill's ``started_ms``; a VNF's RTO is the cut to
its failover controller's ``vnf.failover_completed`` (the promoted standby reported
active) — 0 when the cut took only standbys; redundancy restored is the cut to its
``vnf.healed`` before failback began ("not restored" with the reason otherwise); RPO is
what the controller found at the cut (the age of the last generation the cut member had
converged, 0 when it had converged the desired one). The what-if's estimate stands beside
each measured RTO. ``html`` draws the same report as one self-contained page.

Invariant: the report reads only the drill and events; the same inputs give the same report.
"""

from __future__ import annotations

import html as html_
import math
from collections.abc import Mapping, Sequence
from typing import Any

from broker.drills import live
from broker.models.event import Event

PROMOTED, HEALED, LOST = "vnf.failover_completed", "vnf.healed", "vnf.member_lost"


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _first(events: Sequence[Event], vnf: str, kind: str, start: int, end: int) -> Event | None:
    return next(
        (e for e in events if e.subject == vnf and e.kind == kind and start <= e.at_ms <= end),
        None,
    )


def vnf_entry(
    d: live.Drill, t: live.Target, events: Sequence[Event], at_measure: Mapping[str, Any]
) -> dict[str, Any]:
    """One VNF's line of the report."""
    end = d.measured_ms or d.ended_ms or 2**62
    failed: list[str] = []
    if not t.active_cut:
        rto: float | None = 0.0
        rto_note = "no promotion needed: the active member was outside the scope"
    elif (ev := _first(events, t.vnf, PROMOTED, d.started_ms, end)) is not None:
        rto, rto_note = round((ev.at_ms - d.started_ms) / 1000, 3), "standby active"
    else:
        rto, rto_note = None, "no standby became active"
        failed.append(f"no standby became active: {at_measure.get('reason') or 'no reason given'}")
    healed = _first(events, t.vnf, HEALED, d.started_ms, end)
    restored: float | str = (
        round((healed.at_ms - d.started_ms) / 1000, 3)
        if healed is not None
        else f"not restored: {at_measure.get('reason') or 'no replacement'}"
    )
    if at_measure.get("state") == "FAILED":
        failed.append(f"the VNF FAILED: {at_measure.get('reason', '')}")
    fb = _failback(d, t.vnf)
    if fb.startswith("not restored"):
        failed.append(f"failback: {fb}")
    return {
        "vnf": t.vnf,
        "tenant": t.tenant,
        "cut": list(t.cut),
        "rto_s": rto,
        "rto_note": rto_note,
        "estimate_rto_s": t.estimate_rto_s,
        "redundancy_restored_s": restored,
        "rpo_s": t.rpo_s,
        "rpo_note": t.rpo_note,
        "state_at_measure": at_measure.get("state", ""),
        "failback": fb,
        "failed": failed,
    }


def _failback(d: live.Drill, vnf: str) -> str:
    if vnf in d.failed_back:
        why = d.failed_back[vnf]
        return "original roles restored" if not why else f"not restored: {why}"
    if not d.failback:
        return "not asked"
    return "under way" if d.state not in live.TERMINAL else "skipped: the drill was aborted"


def build(
    d: live.Drill, events: Sequence[Event], at_measure: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The whole report: per VNF, totals with percentiles, the timeline."""
    subjects = {t.vnf for t in d.targets} | {d.id}
    mine = sorted((e for e in events if e.subject in subjects), key=lambda e: (e.at_ms, e.id))
    rows = [vnf_entry(d, t, mine, at_measure.get(t.vnf, {})) for t in d.targets]
    rtos = [r["rto_s"] for r in rows if r["rto_s"] is not None and r["cut"] and r["rto_s"] > 0]
    restored = [r for r in rows if not isinstance(r["redundancy_restored_s"], str)]
    return {
        "drill": d.id,
        "state": d.state,
        "reason": d.reason,
        "sites": list(d.sites),
        "started_ms": d.started_ms,
        "ended_ms": d.ended_ms,
        "vnfs": rows,
        "totals": {
            "vnfs": len(rows),
            "promoted": len(rtos),
            "rto_p50_s": percentile(rtos, 50),
            "rto_p90_s": percentile(rtos, 90),
            "rto_p99_s": percentile(rtos, 99),
            "rto_max_s": max(rtos, default=None),
            "restored": len(restored),
            "failed_back": sum(1 for r in rows if r["failback"] == "original roles restored"),
            "failed": sum(1 for r in rows if r["failed"]),
        },
        "timeline": [
            {
                "at_ms": e.at_ms,
                "t_s": round((e.at_ms - d.started_ms) / 1000, 3),
                "kind": e.kind,
                "subject": e.subject,
                "message": e.message,
            }
            for e in mine
        ],
    }


# -- the human page -------------------------------------------------------------------


def _table(rows: Sequence[Mapping[str, Any]], cols: Sequence[str]) -> str:
    head = "".join(f"<th>{html_.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html_.escape(_cell(r.get(c)))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(v: Any) -> str:
    if isinstance(v, list):
        return "; ".join(str(x) for x in v)
    return "" if v is None else str(v)


def _chart(rep: Mapping[str, Any]) -> str:
    """The timeline as an SVG: one row per subject, one dot per event at its time."""
    tl = rep["timeline"]
    if not tl:
        return "<p>no event recorded</p>"
    subjects = list(dict.fromkeys(e["subject"] for e in tl))
    span = max(1.0, max(e["t_s"] for e in tl) - min(0.0, min(e["t_s"] for e in tl)))
    lo, left, width, row = min(0.0, min(e["t_s"] for e in tl)), 220, 700, 18
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 20}" '
        f'height="{row * len(subjects) + 30}" font-size="11">'
    ]
    for i, s in enumerate(subjects):
        y = row * i + 14
        parts.append(f'<text x="4" y="{y + 4}">{html_.escape(s)}</text>')
        parts.append(f'<line x1="{left}" y1="{y}" x2="{left + width}" y2="{y}" stroke="#ddd"/>')
    colors = {PROMOTED: "#2a2", LOST: "#c22", HEALED: "#22c"}
    for e in tl:
        x = left + (e["t_s"] - lo) / span * width
        y = row * subjects.index(e["subject"]) + 14
        color = colors.get(e["kind"], "#888")
        title = html_.escape(f"{e['t_s']} s {e['kind']}: {e['message']}")
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y}" r="4" fill="{color}"><title>{title}</title></circle>'
        )
    y = row * len(subjects) + 24
    parts.append(f'<text x="{left}" y="{y}">{lo:g} s</text>')
    parts.append(f'<text x="{left + width - 40}" y="{y}">{lo + span:.1f} s</text></svg>')
    return "".join(parts)


def html(rep: Mapping[str, Any]) -> str:
    """One self-contained HTML page: verdict, totals, per VNF, the timeline chart."""
    title = html_.escape(f"Drill {rep['drill']}: {rep['state']}")
    cols = [
        "vnf",
        "tenant",
        "cut",
        "rto_s",
        "estimate_rto_s",
        "redundancy_restored_s",
        "rpo_s",
        "failback",
        "failed",
    ]
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left}"
        f"</style></head><body><h1>{title}</h1>"
        f"<p>{html_.escape(rep['reason'])} — sites cut: {html_.escape(', '.join(rep['sites']))}</p>"
        f"<h2>Totals</h2>{_table([rep['totals']], list(rep['totals']))}"
        f"<h2>Per VNF</h2>{_table(rep['vnfs'], cols)}"
        f"<h2>Timeline</h2>{_chart(rep)}"
        f"{_table(rep['timeline'], ['t_s', 'kind', 'subject', 'message'])}"
        "</body></html>"
    )
