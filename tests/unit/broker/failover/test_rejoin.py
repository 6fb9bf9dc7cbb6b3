"""``Rejoin``: a drill's cut member comes back live (its loss was simulated), unless a
replacement was placed or its deletion began — the machine's one hook for drills."""

from __future__ import annotations

import dataclasses

from broker.failover import machine

A, B = "fw-0@s1", "fw-1@s2"


def pair() -> machine.Vnf:
    members = (
        machine.Member("fw-0", "s1", role="active", applied_role="active", ready=True),
        machine.Member("fw-1", "s2", role="standby", applied_role="standby", ready=True),
    )
    return machine.Vnf("v", machine.Policy(), members, wanted=2)


def cut() -> machine.Vnf:
    vnf = machine.step(pair(), machine.Lost(A, "drill: site s1 cut"), 0).vnf
    assert vnf.member(A).condemned and vnf.member(B).role == "active"
    return vnf


def test_a_cut_member_rejoins_as_a_live_standby_and_can_be_switched_back() -> None:
    vnf = cut()
    vnf = machine.step(vnf, machine.PlaceFailed(A, "not built"), 1).vnf
    vnf = machine.step(vnf, machine.Observed(B, True, "active"), 2).vnf
    vnf = machine.step(vnf, machine.Observed(A, True, "standby"), 3).vnf
    back = machine.step(vnf, machine.Rejoin(A), 4).vnf
    a = back.member(A)
    assert (a.condemned, a.lost_ms, a.replace_wanted, a.refused, a.role) == (
        "",
        None,
        False,
        "",
        "standby",
    )
    assert back.phase is machine.Phase.ACTIVE, back.reason
    switched = machine.step(back, machine.Failover("s1"), 5)
    assert machine.SetRole(B, "standby") in switched.actions
    assert switched.vnf.promote_after == A, "promoted once the demotion is reported"


def test_no_rejoin_once_replaced_or_deleting() -> None:
    vnf = cut()
    for changed in (
        dataclasses.replace(vnf.member(A), replaced_by="fw-0@s3"),
        dataclasses.replace(vnf.member(A), deleting=True),
    ):
        gone = dataclasses.replace(vnf, members=(changed, vnf.member(B)))
        assert machine.step(gone, machine.Rejoin(A), 9).vnf.member(A).condemned
