"""Drains move one VNF per drained site at a time, the highest priority first (issue 10)."""

from __future__ import annotations

import dataclasses

from broker.controllers.drain import Drains
from broker.failover import machine


def vnf(vnf_id: str, priority: int, *members: machine.Member) -> dict[str, machine.Vnf]:
    return {"app": machine.Vnf(vnf_id, machine.Policy(), members, wanted=2, priority=priority)}


def test_one_vnf_at_a_time_highest_priority_first() -> None:
    marked: list[str] = []
    drains = Drains(marked.append)
    low = vnf("low", 0, machine.Member("a-0", "s1"), machine.Member("a-1", "s2"))
    high = vnf("high", 9, machine.Member("a-0", "s1"), machine.Member("a-1", "s3"))
    elsewhere = vnf("other", 5, machine.Member("a-0", "s2"), machine.Member("a-1", "s3"))
    for v, m in (("low", low), ("high", high), ("other", elsewhere)):
        drains.seen(v, m)
    drains.set("s1", True)
    assert drains.moving("s1") == "high" and marked == ["high"]
    assert drains.asked("high") == "s1" and drains.asked("low") == ""
    drains.took("high", "s1")
    drains.tick()
    assert drains.moving("s1") == "high", "its member at s1 is not replaced yet"

    gone = dataclasses.replace(high["app"].members[0], condemned="drain", deleting=True)
    drains.seen("high", vnf("high", 9, gone, high["app"].members[1]))
    assert drains.moving("s1") == "low" and marked == ["high", "low"]

    drains.set("s1", False)
    assert drains.moving("s1") == "" and drains.asked("low") == ""
