"""Wire ↔ domain conversion for the agent: ``siteagent.models`` to protobuf and back.

The only siteagent module besides ``session`` that touches the generated code. A desired
object whose spec is not a JSON object is a protocol error (``InvalidSpec``), never a
crash of the stream.
"""

from __future__ import annotations

import json

from meridian.v1 import agent_pb2 as pb

from siteagent import errors, models

STATES = {
    models.ObjectState.PENDING: pb.OBJECT_STATE_PENDING,
    models.ObjectState.READY: pb.OBJECT_STATE_READY,
    models.ObjectState.FAILED: pb.OBJECT_STATE_FAILED,
    models.ObjectState.DELETED: pb.OBJECT_STATE_DELETED,
}


def inventory_to_wire(inv: models.Inventory) -> pb.Inventory:
    return pb.Inventory(
        collected_unix_ms=inv.collected_unix_ms,
        hosts=[
            pb.Host(
                name=h.name,
                traits=dict(h.traits),
                cpu_allocation_ratio=h.cpu_allocation_ratio,
                cells=[
                    pb.NumaCell(
                        id=c.id,
                        cpus_total=c.cpus_total,
                        pcpus_total=c.pcpus_total,
                        pcpus_used=c.pcpus_used,
                        vcpus_used=c.vcpus_used,
                        memory_mb=c.memory_mb,
                        memory_used_mb=c.memory_used_mb,
                        hugepages=[
                            pb.HugePages(page_size_kb=p.page_size_kb, total=p.total, free=p.free)
                            for p in c.hugepages
                        ],
                        sriov=[
                            pb.SriovPool(
                                physnet=p.physnet,
                                device=p.device,
                                vfs_total=p.vfs_total,
                                vfs_used=p.vfs_used,
                            )
                            for p in c.sriov
                        ],
                    )
                    for c in h.cells
                ],
            )
            for h in inv.hosts
        ],
    )


def usage_to_wire(usage: models.Usage) -> pb.Usage:
    return pb.Usage(
        projects={
            project: pb.ResourceAmounts(amounts=dict(amounts))
            for project, amounts in usage.projects.items()
        }
    )


def desired_from_wire(msg: pb.DesiredObject) -> models.DesiredObject:
    try:
        spec = json.loads(msg.spec_json or b"{}")
    except ValueError as exc:
        raise errors.InvalidSpec("spec", f"not JSON: {exc}") from exc
    if not isinstance(spec, dict):
        raise errors.InvalidSpec("spec", "must be a JSON object")
    return models.DesiredObject(
        kind=msg.kind, name=msg.name, generation=msg.generation, spec=spec, deleted=msg.deleted
    )


def status_to_wire(st: models.ObjectStatus) -> pb.ObjectStatus:
    return pb.ObjectStatus(
        kind=st.kind,
        name=st.name,
        observed_generation=st.observed_generation,
        state=STATES[st.state],
        message=st.message,
        temporary=st.temporary,
        outputs=dict(st.outputs),
    )


def invalid_status(msg: pb.DesiredObject, problem: str) -> pb.AgentMessage:
    """A permanent FAILED status for a desired object the agent could not even read."""
    return pb.AgentMessage(
        status=pb.ObjectStatus(
            kind=msg.kind,
            name=msg.name,
            observed_generation=msg.generation,
            state=pb.OBJECT_STATE_FAILED,
            message=problem,
            temporary=False,
        )
    )
