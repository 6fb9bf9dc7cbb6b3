"""Wire ↔ domain conversion for the gateway: protobuf messages in, frozen models out."""

from __future__ import annotations

import json

from meridian.v1 import agent_pb2 as pb

from broker.models import inventory as inv
from broker.models import objects


def inventory_from_wire(site: str, msg: pb.Inventory) -> inv.Inventory:
    return inv.Inventory(
        site=site,
        collected_ms=msg.collected_unix_ms,
        hosts=tuple(
            inv.Host(
                name=h.name,
                traits=dict(h.traits),
                cpu_allocation_ratio=h.cpu_allocation_ratio,
                cells=tuple(
                    inv.NumaCell(
                        id=c.id,
                        cpus_total=c.cpus_total,
                        pcpus_total=c.pcpus_total,
                        pcpus_used=c.pcpus_used,
                        vcpus_used=c.vcpus_used,
                        memory_mb=c.memory_mb,
                        memory_used_mb=c.memory_used_mb,
                        hugepages=tuple(
                            inv.HugePages(p.page_size_kb, p.total, p.free) for p in c.hugepages
                        ),
                        sriov=tuple(
                            inv.SriovPool(p.physnet, p.device, p.vfs_total, p.vfs_used)
                            for p in c.sriov
                        ),
                    )
                    for c in h.cells
                ),
            )
            for h in msg.hosts
        ),
    )


def usage_from_wire(msg: pb.Usage) -> dict[str, dict[str, int]]:
    return {project: dict(amounts.amounts) for project, amounts in msg.projects.items()}


def desired_to_wire(kind: str, name: str, value: objects.Desired) -> pb.BrokerMessage:
    """A stored desired object as a push: ``Desired`` is the wire's ``DesiredObject``."""
    return pb.BrokerMessage(
        desired=pb.DesiredObject(
            kind=kind,
            name=name,
            generation=value.generation,
            spec_json=json.dumps(dict(value.spec), separators=(",", ":")).encode(),
            deleted=value.deleted,
        )
    )


STATES = {
    pb.OBJECT_STATE_PENDING: objects.State.PENDING,
    pb.OBJECT_STATE_READY: objects.State.READY,
    pb.OBJECT_STATE_FAILED: objects.State.FAILED,
    pb.OBJECT_STATE_DELETED: objects.State.DELETED,
}


def status_from_wire(msg: pb.ObjectStatus, at_ms: int) -> objects.Status:
    """An agent's ``ObjectStatus`` as stored under ``observed/<site>/<kind>/<name>``."""
    return objects.Status(
        kind=msg.kind,
        name=msg.name,
        observed_generation=msg.observed_generation,
        state=STATES.get(msg.state, objects.State.UNSPECIFIED),
        message=msg.message,
        temporary=msg.temporary,
        outputs=dict(msg.outputs),
        at_ms=at_ms,
    )
