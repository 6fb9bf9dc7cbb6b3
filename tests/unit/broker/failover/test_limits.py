"""Re-placement order and bounds: priority first, N federation-wide, M per site (issue 10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.failover.limits import Recoveries, Request

SAMPLE = Path(__file__).parents[4] / "deploy" / "samples" / "vnf" / "vfirewall.yaml"


def test_priority_then_oldest_first() -> None:
    rec = Recoveries(total=10, per_site=10)
    rec.ask(Request(vnf="low", member="m", priority=0, asked_ms=1))
    rec.ask(Request(vnf="high", member="m", priority=9, asked_ms=5))
    rec.ask(Request(vnf="old", member="m", priority=0, asked_ms=0))
    order = [r.vnf for r in iter(rec.next, None)]
    assert order == ["high", "old", "low"]


def test_federation_wide_limit() -> None:
    rec = Recoveries(total=2, per_site=4)
    for i in range(5):
        rec.ask(Request(vnf=f"v{i}", member="m"))
    got = [rec.next(), rec.next(), rec.next()]
    assert got[2] is None and rec.running() == 2 and rec.queued() == 3
    assert got[0] is not None
    rec.finish(got[0].vnf, got[0].member)
    assert rec.next() is not None and rec.running() == 2
    assert rec.peak == 2


def test_per_site_limit_and_requeue() -> None:
    rec = Recoveries(total=10, per_site=1)
    rec.ask(Request(vnf="a", member="m"))
    rec.ask(Request(vnf="b", member="m"))
    a, b = rec.next(), rec.next()
    assert a is not None and b is not None
    assert rec.target("a", "m", "s1")
    assert not rec.target("b", "m", "s1"), "s1 is full"
    assert rec.open_sites(["s1", "s2"]) == ["s2"]
    rec.requeue(b)
    assert rec.running() == 1 and rec.queued() == 1
    rec.finish("a", "m")
    assert rec.at_site("s1") == 0 and rec.site_open("s1")


def test_moving_target_frees_the_old_slot() -> None:
    rec = Recoveries(total=4, per_site=1)
    rec.ask(Request(vnf="a", member="m"))
    assert rec.next() is not None
    assert rec.target("a", "m", "s1") and rec.target("a", "m", "s2")
    assert rec.at_site("s1") == 0 and rec.at_site("s2") == 1


def test_duplicates_and_cancel() -> None:
    rec = Recoveries()
    rec.ask(Request(vnf="a", member="m"))
    rec.ask(Request(vnf="a", member="m"))
    assert rec.queued() == 1
    rec.cancel("a", "m")
    assert rec.next() is None


def test_bad_limits_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Recoveries(total=0)


def test_descriptor_policy_defaults_and_phase_fold() -> None:
    from broker.failover import machine, policy
    from broker.models import vnf as model
    from broker.settings import BrokerSettings

    text = SAMPLE.read_text()
    desc = model.parse(text)
    vdu = desc.vdus[0]
    assert vdu.redundancy.failover == model.FailoverPolicy()
    pol = policy.policy_of(vdu, BrokerSettings())
    assert (pol.promote, pol.restore, pol.grace_ms) == ("auto", "auto", 0)
    assert (pol.ready_timeout_ms, pol.max_attempts) == (120_000, 3)
    assert desc.priority == 0
    schema = model.schema()
    assert "FailoverPolicy" in schema["$defs"]
    assert "priority" in schema["properties"]
    phases = [machine.Phase.ACTIVE, machine.Phase.HEALING, machine.Phase.DEGRADED]
    assert policy.vnf_phase(phases) is model.VnfState.HEALING
    assert policy.vnf_phase([]) is model.VnfState.ACTIVE


def test_bad_failover_policy_names_the_field() -> None:
    from broker import errors
    from broker.models import vnf as model

    data = model.load_text(SAMPLE.read_text())
    data["vdus"][0]["redundancy"]["failover"] = {"promote": "sometimes"}
    with pytest.raises(errors.InvalidInput, match=r"vdus\[0\]\.redundancy\.failover\.promote"):
        model.parse(data)
    data["vdus"][0]["redundancy"]["failover"] = {"grace_s": -1}
    with pytest.raises(errors.InvalidInput, match="grace_s"):
        model.parse(data)


def test_forget_drops_a_vnfs_requests_and_frees_its_slots() -> None:
    rec = Recoveries(total=2, per_site=1)
    rec.ask(Request("v1", "a@s1"))
    rec.ask(Request("v1", "b@s1"))
    rec.ask(Request("v2", "c@s1"))
    first = rec.next()
    assert first is not None and rec.target(first.vnf, first.member, "s2")
    rec.forget("v1")
    assert rec.running() == 0 and rec.at_site("s2") == 0
    left = rec.next()
    assert left is not None and left.vnf == "v2" and rec.next() is None
