"""Placed VNFs for drill tests and the survivability benchmark.

``place`` plans a descriptor with the real Planner on a snapshot, applies its claims to
the snapshot as a commit would, and returns the record the VNF controller would write
(every member READY), so a what-if sees the federation exactly as after real placements.
"""

from __future__ import annotations

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
