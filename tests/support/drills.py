"""Placed VNFs for drill tests and the survivability benchmark.

``place`` plans a descriptor with the real Planner on a snapshot, applies its claims to
the snapshot as a commit would, and returns the record the VNF controller would write
(every member READY), so a what-if sees the federation exactly as after real placements.
"""

from __future__ import annotations

from typing import Any

from broker.drills import whatif
from broker.models import vnf as model
from broker.placement.plan import Planner
from broker.placement.snapshot import Snapshot


def place(
    snap: Snapshot, desc: model.Descriptor, vnf_id: str, planner: Planner | None = None
) -> whatif.Placed | None:
    """``desc`` placed as ``vnf_id`` (None when the federation has no room for it)."""
    result = (planner or Planner()).plan(snap, desc, vnf_id)
    if not result.feasible:
        return None
    for a in result.assignments:
        snap.add_claims(snap.sites[a.site], [a.claim], snap.revision + 1)
    members = tuple(
        model.MemberStatus(
            a.member.name,
            a.member.vdu,
            a.member.role,
            a.site,
            a.claim.host,
            a.claim.cell,
            "READY",
        )
        for a in result.assignments
    )
    record = model.VnfRecord(vnf_id, desc.tenant, {}, model.VnfState.ACTIVE, members=members)
    return whatif.Placed(record, desc)


def reported(vnf: str) -> dict[str, Any]:
    """A finished live drill ``drill-x`` with a measured report of one VNF (for the
    report's readers: API and CLI)."""
    rep = {
        "drill": "drill-x",
        "state": "COMPLETED",
        "reason": "failed back",
        "sites": ["s1"],
        "started_ms": 1,
        "ended_ms": 2,
        "vnfs": [
            {
                "vnf": vnf,
                "tenant": "acme-nfv",
                "cut": ["fw-0@s1"],
                "rto_s": 1.5,
                "estimate_rto_s": 5.0,
                "redundancy_restored_s": "not restored: no",
                "rpo_s": 0.0,
                "failback": "original roles restored",
                "failed": [],
            }
        ],
        "totals": {"vnfs": 1, "rto_p99_s": 1.5},
        "timeline": [
            {
                "at_ms": 1,
                "t_s": 0.0,
                "kind": "drill.started",
                "subject": "drill-x",
                "message": "cut <s1>",
            }
        ],
    }
    return {
        "id": "drill-x",
        "mode": "live",
        "state": "COMPLETED",
        "scope": {"sites": ["s1"]},
        "created_ms": 1,
        "result": {"vnfs": []},
        "report": rep,
    }
