"""A VNF's failover machines from its descriptor, its record and the settings.

A VNF runs one machine per VDU (each VDU has its own redundancy model and policy);
``vnf_phase`` folds their phases into the VNF's state, the worst first. ``ROLE_KEY`` is
where a member's role travels: in the server's desired spec (``metadata``) and back in
the observed status's outputs.

Invariant: the machines' members are exactly the record's members, keyed name@site.
"""

from __future__ import annotations

import dataclasses
import json

from broker.failover import machine
from broker.models import vnf as model
from broker.settings import BrokerSettings

ROLE_KEY = "meridian:role"
"""The role key in a server's desired metadata and in its observed outputs (``role``)."""

_WORST = (
    machine.Phase.FAILED,
    machine.Phase.FAILING_OVER,
    machine.Phase.HEALING,
    machine.Phase.DEGRADED,
    machine.Phase.ACTIVE,
)


def policy_of(vdu: model.Vdu, settings: BrokerSettings) -> machine.Policy:
    red = vdu.redundancy
    return machine.Policy(
        model=red.model,
        promote=red.failover.promote,
        restore=red.failover.restore,
        grace_ms=int(red.failover.grace_s * 1000),
        ready_timeout_ms=int(settings.vnf.ready_timeout_s * 1000),
        max_attempts=settings.vnf.max_attempts,
        retry_ms=int(settings.vnf.restore_retry_s * 1000),
    )


def machines(
    record: model.VnfRecord, desc: model.Descriptor, settings: BrokerSettings
) -> dict[str, machine.Vnf]:
    """One machine per VDU, its members taken from the record."""
    out: dict[str, machine.Vnf] = {}
    for vdu in desc.vdus:
        members = tuple(
            machine.Member(
                m.name,
                m.site,
                m.host,
                role=m.role,
                applied_role=m.role if m.state == "READY" else "",
                ready=m.state == "READY",
                # given up by its first placement (controllers.deadlines): lost already
                lost_ms=0 if m.given_up else None,
                lost_reason=m.message if m.given_up else "",
            )
            for m in record.members
            if m.vdu == vdu.name
        )
        out[vdu.name] = machine.Vnf(
            record.id,
            policy_of(vdu, settings),
            members,
            wanted=len(vdu.redundancy.roles()),
            priority=desc.priority,
        )
    return out


def vnf_phase(phases: list[machine.Phase]) -> model.VnfState:
    """The VNF's state: the worst of its VDUs' phases."""
    worst = min(phases, key=_WORST.index, default=machine.Phase.ACTIVE)
    return model.VnfState(worst.value)


def dump(machines: dict[str, machine.Vnf]) -> bytes:
    """The machines as stored under ``failover/<vnf>``."""
    return json.dumps(
        {vdu: dataclasses.asdict(m) for vdu, m in machines.items()}, separators=(",", ":")
    ).encode()


def load(raw: bytes) -> dict[str, machine.Vnf]:
    out: dict[str, machine.Vnf] = {}
    for vdu, data in json.loads(raw).items():
        members = tuple(
            machine.Member(
                **{
                    **m,
                    "avoid_hosts": tuple(m["avoid_hosts"]),
                    "avoid_sites": tuple(m["avoid_sites"]),
                }
            )
            for m in data["members"]
        )
        out[vdu] = machine.Vnf(
            **{
                **data,
                "policy": machine.Policy(**data["policy"]),
                "members": members,
                "phase": machine.Phase(data["phase"]),
            }
        )
    return out
