"""The live drill's state machine with a driven clock: start or refusal, measuring, the
one-VNF-at-a-time failback, every abort (operator, max_duration_s, a real site loss),
idempotence once terminal, and the stored form read back."""

from __future__ import annotations

import dataclasses
import json

import pytest

from broker.drills import live

ORIG = {"fw-0@s1": "active", "fw-1@s2": "standby"}
SWAPPED = {"fw-0@s1": "standby", "fw-1@s2": "active"}


def target(vnf: str) -> live.Target:
    return live.Target(vnf, "acme", ("fw-0@s1",), dict(ORIG), estimate_rto_s=5.0)


def drill(failback: bool = True, max_s: float = 60) -> live.Drill:
    return live.Drill("d1", ("s1",), max_s, failback, created_ms=0)


def seen(state: str, roles: dict[str, str], lost: bool = True) -> live.VnfView:
    return live.VnfView(state, roles, "", lost)


def started(failback: bool = True, max_s: float = 60) -> live.Drill:
    d, intents = live.advance(
        drill(failback, max_s), live.View({}, candidates=[target("b"), target("a")]), 1000
    )
    assert d.state == live.RUNNING and d.started_ms == 1000
    assert [i for i in intents if isinstance(i, live.Cut)] == [
        live.Cut("a", ("s1",)),
        live.Cut("b", ("s1",)),
    ]
    return d


def test_refused_at_the_start_fails_with_the_reason_and_cuts_nothing() -> None:
    for view, why in [
        (live.View({}, refusal="site s1 is DOWN", candidates=[target("a")]), "site s1 is DOWN"),
        (live.View({}), "no VNF of the drill"),
    ]:
        d, intents = live.advance(drill(), view, 5)
        assert d.state == live.FAILED and why in d.reason and d.ended_ms == 5
        assert not [i for i in intents if isinstance(i, live.Cut | live.Lift)]


def test_measures_until_settled_then_fails_back_one_vnf_at_a_time() -> None:
    d = started()
    # the failover controller has not seen the cut yet: still ACTIVE, not settled
    d2, intents = live.advance(d, live.View({"a": seen("ACTIVE", ORIG, lost=False)}), 1500)
    assert (d2, intents) == (d, [])
    promoting = {"a": seen("FAILING_OVER", SWAPPED), "b": seen("DEGRADED", SWAPPED)}
    assert live.advance(d, live.View(promoting), 2000) == (d, [])
    settled = {"a": seen("DEGRADED", SWAPPED), "b": seen("DEGRADED", SWAPPED)}
    d, intents = live.advance(d, live.View(settled), 3000)
    assert d.state == live.FAILING_BACK and d.measured_ms == 3000
    assert d.at_measure["a"]["state"] == "DEGRADED"
    assert not [i for i in intents if isinstance(i, live.Lift)]
    d, intents = live.advance(d, live.View(settled), 3100)
    assert [i for i in intents if isinstance(i, live.Lift)] == [live.Lift("a", ("fw-0@s1",), "s1")]
    assert d.current == "a" and d.queue == ("b",)
    # a is not back in its roles yet: b waits (one at a time)
    assert live.advance(d, live.View(settled), 3200) == (d, [])
    back = {"a": seen("ACTIVE", ORIG), "b": seen("DEGRADED", SWAPPED)}
    d, intents = live.advance(d, live.View(back), 3300)
    assert d.failed_back == {"a": ""} and d.current == "b"
    assert [i for i in intents if isinstance(i, live.Lift)] == [live.Lift("b", ("fw-0@s1",), "s1")]
    # b never gets back: given up after FAILBACK_TIMEOUT_MS, saying why
    late = 3300 + live.FAILBACK_TIMEOUT_MS
    d, intents = live.advance(d, live.View(back), late)
    assert d.state == live.COMPLETED and d.ended_ms == late
    assert d.failed_back["b"].startswith("not restored in time: DEGRADED")
    assert "fw-0@s1" in d.failed_back["b"]


def test_without_failback_the_cuts_are_lifted_and_roles_left() -> None:
    d = started(failback=False)
    settled = {"a": seen("DEGRADED", SWAPPED), "b": seen("DEGRADED", SWAPPED)}
    d, intents = live.advance(d, live.View(settled), 2000)
    assert d.state == live.COMPLETED
    assert [i for i in intents if isinstance(i, live.Lift)] == [
        live.Lift("a", ("fw-0@s1",)),
        live.Lift("b", ("fw-0@s1",)),
    ]


@pytest.mark.parametrize("failback", [True, False])
def test_max_duration_ends_the_measuring_as_an_abort(failback: bool) -> None:
    d = started(failback, max_s=10)
    stuck = {"a": seen("FAILING_OVER", SWAPPED), "b": seen("DEGRADED", SWAPPED)}
    assert live.advance(d, live.View(stuck), 10_999) == (d, [])
    d, _ = live.advance(d, live.View(stuck), 11_000)
    if failback:
        assert d.state == live.FAILING_BACK and "max_duration_s" in d.aborting
        d, _ = live.advance(d, live.View(stuck), 11_100)
        back = {"a": seen("ACTIVE", ORIG), "b": seen("ACTIVE", ORIG)}
        d, _ = live.advance(d, live.View(back), 11_200)
        d, _ = live.advance(d, live.View(back), 11_300)
        assert d.failed_back == {"a": "", "b": ""}
    assert d.state == live.ABORTED and "max_duration_s (10 s) ran out" in d.reason


def test_operator_abort_fails_back_then_ends_aborted() -> None:
    d = started()
    view = live.View({"a": seen("DEGRADED", SWAPPED)}, abort_asked="ops")
    d, _ = live.advance(d, view, 2000)
    assert d.state == live.FAILING_BACK and d.aborting == "aborted by ops"
    d, intents = live.advance(d, view, 2100)  # the abort still asked: failback goes on
    assert d.current == "a" and [i for i in intents if isinstance(i, live.Lift)]


def test_abort_during_failback_lifts_what_is_left_at_once() -> None:
    d = started()
    settled = {"a": seen("DEGRADED", SWAPPED), "b": seen("DEGRADED", SWAPPED)}
    d, _ = live.advance(d, live.View(settled), 2000)
    d, _ = live.advance(d, live.View(settled), 2100)
    d, intents = live.advance(d, live.View(settled, abort_asked="ops"), 2200)
    assert d.state == live.ABORTED and "during failback" in d.reason
    assert [i.vnf for i in intents if isinstance(i, live.Lift)] == ["a", "b"]
    assert all(not i.to_site for i in intents if isinstance(i, live.Lift))


@pytest.mark.parametrize("phase", [live.RUNNING, live.FAILING_BACK])
def test_a_real_site_loss_aborts_and_hands_over_to_normal_failover(phase: str) -> None:
    d = started()
    settled = {"a": seen("DEGRADED", SWAPPED), "b": seen("DEGRADED", SWAPPED)}
    if phase == live.FAILING_BACK:
        d, _ = live.advance(d, live.View(settled), 2000)
        d, _ = live.advance(d, live.View(settled), 2100)
        assert d.state == phase
    d, intents = live.advance(d, live.View(settled, down=["s2"]), 2500)
    assert d.state == live.ABORTED and "real site loss" in d.reason and "s2" in d.reason
    lifts = [i for i in intents if isinstance(i, live.Lift)]
    assert sorted(i.vnf for i in lifts) == ["a", "b"], "every cut left is lifted"
    assert all(not i.to_site for i in lifts), "no switch back: normal failover decides"


def test_terminal_drills_never_change_and_the_stored_form_reads_back() -> None:
    d = started()
    d, _ = live.advance(d, live.View({}, abort_asked="ops", down=["s1"]), 2000)
    assert d.state == live.ABORTED
    for view in (live.View({}, abort_asked="ops"), live.View({}, down=["s2"])):
        assert live.advance(d, view, 9000) == (d, [])
    assert live.load(json.loads(json.dumps(live.dump(d)))) == d
    assert live.load({**live.dump(d), "mode": "live", "report": {}}) == d


def test_hold_keeps_the_drill_failed_over_that_long() -> None:
    d = live.Drill("d1", ("s1",), 60, True, hold_s=5)
    d, _ = live.advance(d, live.View({}, candidates=[target("a")]), 1000)
    settled = {"a": seen("DEGRADED", SWAPPED)}
    assert live.advance(d, live.View(settled), 5999) == (d, [])
    assert live.advance(d, live.View(settled), 6000)[0].state == live.FAILING_BACK


def isolating(max_s: float = 60) -> tuple[live.Drill, list[live.Intent]]:
    d = dataclasses.replace(drill(True, max_s), isolate=True)
    return live.advance(d, live.View({}, candidates=[target("a")]), 1000)


def test_isolate_quarantines_at_the_cut_and_releases_before_failing_back() -> None:
    d, intents = isolating()
    assert d.state == live.RUNNING and live.Quarantine(("s1",)) in intents
    settled = {"a": seen("DEGRADED", SWAPPED)}
    d, intents = live.advance(d, live.View(settled), 2000)
    assert d.state == live.FAILING_BACK and live.Release(("s1",)) in intents
    assert not [i for i in intents if isinstance(i, live.Lift)]
    # the quarantined site is not UP yet: no cut is lifted (its member could not rejoin)
    assert live.advance(d, live.View(settled, back=False), 2100) == (d, [])
    d, intents = live.advance(d, live.View(settled), 2200)
    assert [i for i in intents if isinstance(i, live.Lift)] == [live.Lift("a", ("fw-0@s1",), "s1")]
    d, intents = live.advance(d, live.View({"a": seen("ACTIVE", ORIG)}), 2300)
    assert d.state == live.COMPLETED and live.Release(("s1",)) in intents


def test_isolate_released_on_every_end() -> None:
    d, intents = live.advance(
        dataclasses.replace(drill(), isolate=True), live.View({}, refusal="no"), 5
    )
    assert d.state == live.FAILED and live.Release(("s1",)) in intents, "released all the same"
    d, _ = isolating()
    d, intents = live.advance(d, live.View({}, down=["s2"]), 1500)
    assert d.state == live.ABORTED and live.Release(("s1",)) in intents
    d, _ = isolating()
    d, _ = live.advance(d, live.View({"a": seen("DEGRADED", SWAPPED)}), 2000)
    late = 2000 + live.FAILBACK_TIMEOUT_MS
    d, intents = live.advance(d, live.View({}, back=False), late)
    assert d.state == live.ABORTED and "did not come back UP" in d.reason
    assert live.Lift("a", ("fw-0@s1",)) in intents and live.Release(("s1",)) in intents
    _, intents = live.advance(drill(), live.View({}, refusal="no"), 5)
    assert not [i for i in intents if isinstance(i, live.Release | live.Quarantine)]
