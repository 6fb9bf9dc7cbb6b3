"""The failover state machine, every transition with a driven clock (issue 10)."""

from __future__ import annotations

import dataclasses

import pytest

from broker.failover import machine as fsm
from broker.failover.machine import ACTIVE, STANDBY, Ev, Phase


def pair(**policy: object) -> fsm.Vnf:
    """An ACTIVE active-standby VNF: fw-0 active at s1, fw-1 standby at s2."""
    return fsm.Vnf(
        "v1",
        fsm.Policy(**policy),  # type: ignore[arg-type]
        (
            fsm.Member("fw-0", "s1", "h1", ACTIVE, ACTIVE, ready=True),
            fsm.Member("fw-1", "s2", "h2", STANDBY, STANDBY, ready=True),
        ),
        wanted=2,
    )


def drive(vnf: fsm.Vnf, *events: tuple[int, fsm.Event]) -> tuple[fsm.Vnf, list[fsm.Action]]:
    actions: list[fsm.Action] = []
    for at, event in events:
        out = fsm.step(vnf, event, at)
        vnf = out.vnf
        actions.extend(out.actions)
    return vnf, actions


def recorded(actions: list[fsm.Action]) -> list[Ev]:
    return [a.type for a in actions if isinstance(a, fsm.Record)]


def of(actions: list[fsm.Action], kind: type) -> list[object]:
    return [a for a in actions if isinstance(a, kind)]


def wanted_active(vnf: fsm.Vnf) -> list[str]:
    return [m.key for m in vnf.members if m.role == ACTIVE]


# -- loss of the active: promote, restore, delete only when replaced -------------------


def test_active_lost_promotes_standby_and_restores_at_a_third_site() -> None:
    vnf, acts = drive(pair(), (1000, fsm.Lost("fw-0@s1", "site s1 DOWN")))
    assert vnf.phase is Phase.FAILING_OVER
    assert recorded(acts) == [Ev.MEMBER_LOST, Ev.FAILOVER_STARTED]
    assert of(acts, fsm.SetRole) == [
        fsm.SetRole("fw-0@s1", STANDBY),
        fsm.SetRole("fw-1@s2", ACTIVE),
    ]
    assert of(acts, fsm.Replace) == [fsm.Replace("fw-0@s1", STANDBY, ("s1",), ("h1",))]
    assert wanted_active(vnf) == ["fw-1@s2"]
    assert all(isinstance(r, fsm.Record) and r.at_ms == 1000 for r in of(acts, fsm.Record))

    vnf, acts = drive(vnf, (1200, fsm.Observed("fw-1@s2", True, ACTIVE)))
    assert vnf.phase is Phase.HEALING
    assert recorded(acts) == [Ev.FAILOVER_COMPLETED]

    vnf, acts = drive(vnf, (1300, fsm.Placed("fw-0@s1", "s3", "h3")))
    assert not of(acts, fsm.Delete), "nothing deleted before the replacement is READY"
    vnf, acts = drive(vnf, (5000, fsm.Observed("fw-0@s3", True, STANDBY)))
    assert of(acts, fsm.Delete) == [fsm.Delete("fw-0@s1")]
    assert vnf.phase is Phase.ACTIVE
    assert recorded(acts) == [Ev.HEALED, Ev.ACTIVE]

    vnf, acts = drive(vnf, (9000, fsm.Deleted("fw-0@s1")))
    assert of(acts, fsm.Release) == [fsm.Release("fw-0@s1")]
    assert sorted(m.key for m in vnf.members) == ["fw-0@s3", "fw-1@s2"]
    assert vnf.phase is Phase.ACTIVE and recorded(acts) == []


def test_never_active_until_the_promoted_role_is_reported() -> None:
    vnf, _ = drive(pair(restore="manual"), (0, fsm.Lost("fw-0@s1", "down")))
    vnf, acts = drive(vnf, (10, fsm.Observed("fw-1@s2", True, STANDBY)))
    assert vnf.phase is Phase.FAILING_OVER and recorded(acts) == []
    vnf, acts = drive(vnf, (20, fsm.Observed("fw-1@s2", True, ACTIVE)))
    assert vnf.phase is Phase.DEGRADED
    assert recorded(acts) == [Ev.FAILOVER_COMPLETED, Ev.DEGRADED]


def test_standby_lost_heals_without_promotion() -> None:
    vnf, acts = drive(pair(), (0, fsm.Lost("fw-1@s2", "host h2 down")))
    assert not of(acts, fsm.SetRole)
    assert of(acts, fsm.Replace) == [fsm.Replace("fw-1@s2", STANDBY, ("s2",), ("h2",))]
    assert vnf.phase is Phase.HEALING
    assert recorded(acts) == [Ev.MEMBER_LOST, Ev.DEGRADED]


# -- hysteresis ------------------------------------------------------------------------


def test_return_within_grace_causes_no_failover() -> None:
    vnf, acts = drive(
        pair(grace_ms=5000),
        (0, fsm.Lost("fw-0@s1", "down")),
        (3000, fsm.Tick()),
        (4000, fsm.Back("fw-0@s1")),
        (9000, fsm.Tick()),
    )
    assert not of(acts, fsm.SetRole) and not of(acts, fsm.Replace)
    assert vnf.phase is Phase.ACTIVE
    assert recorded(acts) == [Ev.DEGRADED, Ev.HEALED, Ev.ACTIVE]


def test_grace_expiry_fails_over_on_the_tick() -> None:
    vnf, acts = drive(pair(grace_ms=5000), (0, fsm.Lost("fw-0@s1", "down")), (4999, fsm.Tick()))
    assert not of(acts, fsm.SetRole)
    vnf, acts = drive(vnf, (5000, fsm.Tick()))
    assert of(acts, fsm.SetRole)[-1] == fsm.SetRole("fw-1@s2", ACTIVE)
    reasons = [a.reason for a in acts if isinstance(a, fsm.Record) and a.type is Ev.MEMBER_LOST]
    assert reasons == ["member fw-0 at s1: lost: down"]


def test_a_flapping_site_is_failed_over_once() -> None:
    vnf, first = drive(pair(), (0, fsm.Lost("fw-0@s1", "down")))
    vnf, again = drive(
        vnf,
        (100, fsm.Back("fw-0@s1")),
        (200, fsm.Lost("fw-0@s1", "down")),
        (300, fsm.Back("fw-0@s1")),
        (400, fsm.Lost("fw-0@s1", "down")),
    )
    assert len(of(first, fsm.Replace)) == 1
    assert not of(again, fsm.Replace) and not of(again, fsm.SetRole)
    assert wanted_active(vnf) == ["fw-1@s2"]


def test_lost_twice_reported_is_one_loss() -> None:
    vnf, _ = drive(
        pair(grace_ms=100), (0, fsm.Lost("fw-0@s1", "a")), (50, fsm.Lost("fw-0@s1", "b"))
    )
    _, later = drive(vnf, (200, fsm.Tick()))
    assert recorded(later).count(Ev.MEMBER_LOST) == 1


# -- never dual-active -----------------------------------------------------------------


def test_returning_stale_active_was_demoted_before_it_may_serve() -> None:
    vnf, _ = drive(
        pair(), (0, fsm.Lost("fw-0@s1", "down")), (10, fsm.Observed("fw-1@s2", True, ACTIVE))
    )
    stale = vnf.member("fw-0@s1")
    assert stale.role == STANDBY and stale.condemned
    vnf, acts = drive(vnf, (20, fsm.Back("fw-0@s1")), (30, fsm.Observed("fw-0@s1", True, STANDBY)))
    assert not of(acts, fsm.SetRole)
    assert wanted_active(vnf) == ["fw-1@s2"]


@pytest.mark.parametrize("to_site", ["", "s2"])
def test_planned_switchover_promotes_only_after_demotion_applied(to_site: str) -> None:
    vnf, acts = drive(pair(), (0, fsm.Failover(to_site)))
    assert of(acts, fsm.SetRole) == [fsm.SetRole("fw-0@s1", STANDBY)]
    assert vnf.phase is Phase.FAILING_OVER and wanted_active(vnf) == []
    vnf, acts = drive(vnf, (10, fsm.Observed("fw-1@s2", True, STANDBY)))
    assert not of(acts, fsm.SetRole), "the old active has not reported its demotion yet"
    vnf, acts = drive(vnf, (20, fsm.Observed("fw-0@s1", True, STANDBY)))
    assert of(acts, fsm.SetRole) == [fsm.SetRole("fw-1@s2", ACTIVE)]
    vnf, acts = drive(vnf, (30, fsm.Observed("fw-1@s2", True, ACTIVE)))
    assert vnf.phase is Phase.ACTIVE
    assert recorded(acts) == [Ev.FAILOVER_COMPLETED, Ev.ACTIVE]


def test_loss_during_a_switchover_promotes_at_once() -> None:
    vnf, _ = drive(pair(), (0, fsm.Failover("")), (5, fsm.Lost("fw-0@s1", "down")))
    assert wanted_active(vnf) == ["fw-1@s2"] and vnf.promote_after == ""


def test_at_most_one_wanted_active_over_any_event_sequence() -> None:
    events: list[fsm.Event] = [
        fsm.Lost("fw-0@s1", "x"),
        fsm.Back("fw-0@s1"),
        fsm.Failover(""),
        fsm.Observed("fw-0@s1", True, STANDBY),
        fsm.Lost("fw-1@s2", "y"),
        fsm.Placed("fw-0@s1", "s3", "h3"),
        fsm.Placed("fw-1@s2", "s4", "h4"),
        fsm.Observed("fw-0@s3", True, STANDBY),
        fsm.Observed("fw-1@s4", True, STANDBY),
        fsm.Tick(),
        fsm.Drain("s3"),
        fsm.Heal(),
        fsm.Deleted("fw-0@s1"),
    ]
    import itertools

    for order in itertools.islice(itertools.permutations(events, 6), 4000):
        vnf = pair()
        for t, ev in enumerate(order):
            try:
                vnf = fsm.step(vnf, ev, t * 10).vnf
            except fsm.Refused:
                continue
            live_active = [m for m in vnf.members if m.role == ACTIVE and not m.condemned]
            assert len(live_active) <= 1, (order, vnf)


# -- manual policy and controls --------------------------------------------------------


def test_promote_manual_waits_for_the_operator() -> None:
    vnf, acts = drive(pair(promote="manual", restore="manual"), (0, fsm.Lost("fw-0@s1", "down")))
    assert of(acts, fsm.SetRole) == [fsm.SetRole("fw-0@s1", STANDBY)]
    assert vnf.phase is Phase.DEGRADED and "promote: manual" in vnf.reason
    vnf, acts = drive(vnf, (100, fsm.Failover("s2")))
    assert of(acts, fsm.SetRole) == [fsm.SetRole("fw-1@s2", ACTIVE)]
    assert vnf.phase is Phase.FAILING_OVER


def test_restore_manual_then_heal() -> None:
    vnf, acts = drive(pair(restore="manual"), (0, fsm.Lost("fw-1@s2", "down")))
    assert not of(acts, fsm.Replace) and vnf.phase is Phase.DEGRADED
    vnf, acts = drive(vnf, (50, fsm.Heal()))
    assert of(acts, fsm.Replace) == [fsm.Replace("fw-1@s2", STANDBY, ("s2",), ("h2",))]
    assert vnf.phase is Phase.HEALING


def test_controls_refused_with_a_reason() -> None:
    with pytest.raises(fsm.Refused, match="no ready standby at s9"):
        fsm.step(pair(), fsm.Failover("s9"), 0)
    with pytest.raises(fsm.Refused, match="nothing to heal"):
        fsm.step(pair(), fsm.Heal(), 0)
    single = dataclasses.replace(pair(model="single"), members=pair().members[:1], wanted=1)
    with pytest.raises(fsm.Refused, match="no standby"):
        fsm.step(single, fsm.Failover(""), 0)
    busy, _ = drive(pair(), (0, fsm.Failover("")))
    with pytest.raises(fsm.Refused, match="under way"):
        fsm.step(busy, fsm.Failover(""), 1)


def test_drain_switches_over_then_moves_every_member_off_the_site() -> None:
    vnf, acts = drive(pair(), (0, fsm.Drain("s1")))
    assert of(acts, fsm.SetRole) == [fsm.SetRole("fw-0@s1", STANDBY)]
    assert of(acts, fsm.Replace) == [fsm.Replace("fw-0@s1", STANDBY, ("s1",), ("h1",))]
    assert not of(acts, fsm.Delete)
    vnf, acts = drive(vnf, (10, fsm.Observed("fw-0@s1", True, STANDBY)))
    assert of(acts, fsm.SetRole) == [fsm.SetRole("fw-1@s2", ACTIVE)]
    vnf, _ = drive(
        vnf, (20, fsm.Observed("fw-1@s2", True, ACTIVE)), (30, fsm.Placed("fw-0@s1", "s3", "h3"))
    )
    vnf, acts = drive(vnf, (40, fsm.Observed("fw-0@s3", True, STANDBY)))
    assert of(acts, fsm.Delete) == [fsm.Delete("fw-0@s1")]
    assert vnf.phase is Phase.ACTIVE


# -- other models ----------------------------------------------------------------------


def test_active_active_survivors_serve_while_degraded() -> None:
    vnf = fsm.Vnf(
        "v2",
        fsm.Policy(model="active-active"),
        (
            fsm.Member("gw-0", "s1", "h1", ACTIVE, ACTIVE, ready=True),
            fsm.Member("gw-1", "s2", "h2", ACTIVE, ACTIVE, ready=True),
        ),
        wanted=2,
    )
    vnf, acts = drive(vnf, (0, fsm.Lost("gw-0@s1", "down")))
    assert of(acts, fsm.Replace) == [fsm.Replace("gw-0@s1", ACTIVE, ("s1",), ("h1",))]
    assert of(acts, fsm.SetRole) == [fsm.SetRole("gw-0@s1", STANDBY)]
    assert vnf.phase is Phase.HEALING
    vnf, _ = drive(vnf, (5, fsm.Placed("gw-0@s1", "s3", "h3")))
    assert vnf.member("gw-0@s3").role == ACTIVE


def test_single_lost_without_restore_is_failed() -> None:
    vnf = fsm.Vnf(
        "v3",
        fsm.Policy(model="single", restore="manual"),
        (fsm.Member("app-0", "s1", "h1", ACTIVE, ACTIVE, ready=True),),
        wanted=1,
    )
    vnf, acts = drive(vnf, (0, fsm.Lost("app-0@s1", "down")))
    assert vnf.phase is Phase.FAILED
    assert recorded(acts) == [Ev.MEMBER_LOST, Ev.FAILED]


# -- deadlines and partial failure -----------------------------------------------------


def test_replacement_not_ready_in_time_is_replaced_host_then_site_excluded() -> None:
    pol = {"ready_timeout_ms": 1000, "max_attempts": 3}
    vnf, _ = drive(
        pair(**pol), (0, fsm.Lost("fw-1@s2", "down")), (10, fsm.Placed("fw-1@s2", "s3", "h3"))
    )
    vnf, acts = drive(vnf, (1009, fsm.Tick()))
    assert not of(acts, fsm.Replace)
    vnf, acts = drive(vnf, (1010, fsm.Tick()))
    assert of(acts, fsm.Replace) == [fsm.Replace("fw-1@s3", STANDBY, (), ("h3",))]
    vnf, acts = drive(vnf, (1100, fsm.Placed("fw-1@s3", "s3", "h4")))
    assert not of(acts, fsm.Delete), "same site: the same server moves to another host"
    assert vnf.member("fw-1@s3").host == "h4" and vnf.member("fw-1@s3").attempts == 2
    vnf, acts = drive(vnf, (2100, fsm.Tick()))
    assert of(acts, fsm.Replace) == [fsm.Replace("fw-1@s3", STANDBY, ("s3",), ("h3", "h4"))]
    vnf, acts = drive(vnf, (2200, fsm.Placed("fw-1@s3", "s4", "h5")))
    assert of(acts, fsm.Delete) == [fsm.Delete("fw-1@s3")], "it never served: deleted at once"
    vnf, acts = drive(vnf, (3200, fsm.Tick()))
    assert not of(acts, fsm.Replace), "max_attempts reached"
    assert vnf.phase is Phase.DEGRADED, "the VNF keeps serving: no teardown"
    assert wanted_active(vnf) == ["fw-0@s1"]


def test_no_feasible_replacement_degrades_and_heal_retries() -> None:
    vnf, _ = drive(pair(), (0, fsm.Lost("fw-1@s2", "down")))
    vnf, acts = drive(vnf, (10, fsm.PlaceFailed("fw-1@s2", "no site fits")))
    assert vnf.phase is Phase.DEGRADED
    assert next(a.reason for a in acts if isinstance(a, fsm.Record)).endswith("no site fits")
    _, acts = drive(vnf, (20, fsm.Heal()))
    assert len(of(acts, fsm.Replace)) == 1


def test_a_refused_replacement_is_asked_for_again_after_the_retry_time() -> None:
    vnf, _ = drive(pair(retry_ms=30_000), (0, fsm.Lost("fw-1@s2", "down")))
    vnf, acts = drive(vnf, (10, fsm.PlaceFailed("fw-1@s2", "site s3 DOWN for a moment")))
    assert vnf.phase is Phase.DEGRADED and not of(acts, fsm.Replace)
    vnf, acts = drive(vnf, (30_009, fsm.Tick()))
    assert not of(acts, fsm.Replace), "not before its retry time"
    vnf, acts = drive(vnf, (30_010, fsm.Tick()))
    assert of(acts, fsm.Replace) == [fsm.Replace("fw-1@s2", STANDBY, ("s2",), ("h2",))]
    assert vnf.member("fw-1@s2").replace_wanted and not vnf.member("fw-1@s2").refused
    vnf, acts = drive(vnf, (30_020, fsm.Tick()))
    assert not of(acts, fsm.Replace), "asked once: the replacement is under way"
    vnf, acts = drive(vnf, (30_030, fsm.PlaceFailed("fw-1@s2", "no site fits")))
    vnf, acts = drive(vnf, (60_029, fsm.Tick()))
    assert not of(acts, fsm.Replace), "the clock starts again at each refusal"


def test_a_refused_replacement_under_manual_restore_waits_for_heal() -> None:
    vnf, _ = drive(pair(restore="manual", retry_ms=10), (0, fsm.Lost("fw-1@s2", "down")))
    vnf, _ = drive(vnf, (10, fsm.Heal()))
    vnf, _ = drive(vnf, (20, fsm.PlaceFailed("fw-1@s2", "no site fits")))
    _, acts = drive(vnf, (10_000, fsm.Tick()))
    assert not of(acts, fsm.Replace)


def test_forgotten_site_releases_usage_but_keeps_waiting_for_the_replacement() -> None:
    vnf, _ = drive(pair(), (0, fsm.Lost("fw-1@s2", "down")))
    vnf, acts = drive(vnf, (10, fsm.Deleted("fw-1@s2")))
    assert of(acts, fsm.Release) == [fsm.Release("fw-1@s2")]
    assert vnf.member("fw-1@s2").released
    vnf, _ = drive(vnf, (20, fsm.Placed("fw-1@s2", "s3", "h3")))
    vnf, acts = drive(vnf, (30, fsm.Observed("fw-1@s3", True, STANDBY)))
    assert not of(acts, fsm.Delete) and not of(acts, fsm.Release)
    assert sorted(m.key for m in vnf.members) == ["fw-0@s1", "fw-1@s3"]


def test_events_for_unknown_members_change_nothing() -> None:
    start = pair()
    for ev in (
        fsm.Lost("x@s9", "?"),
        fsm.Back("x@s9"),
        fsm.Observed("x@s9", True, ACTIVE),
        fsm.Placed("x@s9", "s3", "h"),
        fsm.PlaceFailed("x@s9", "?"),
        fsm.Deleted("fw-0@s1"),
    ):
        out = fsm.step(start, ev, 0)
        assert out.vnf == start and out.actions == ()
