"""Measured recovery times (issue 11): real failovers' pairs from the event log, a
drill's report values, the kept window and the what-if's estimates from them."""

from __future__ import annotations

import json

from broker.drills import rto, whatif
from broker.models.event import Event
from broker.settings import BrokerSettings


def ev(at: int, kind: str, subject: str, message: str = "") -> Event:
    return Event(f"{at:013d}-0", at, kind, subject, message)


EVENTS = [
    ev(1_000, "vnf.member_lost", "a", "fw-0@s1: site s1 DOWN"),
    ev(1_500, "vnf.member_lost", "b", "fw-0@s2: drill: site s2 cut"),
    ev(3_000, "vnf.failover_completed", "a"),
    ev(3_100, "vnf.failover_completed", "b"),  # a drill's: the drill's report counts it
    ev(4_000, "vnf.failover_completed", "c"),  # no loss before it: an operator's switch
    ev(9_000, "vnf.healed", "a"),
    ev(9_500, "vnf.healed", "a"),  # a second healing of the same loss: counted once
]


def test_real_failovers_pair_each_loss_with_its_first_completions() -> None:
    assert rto.from_events(EVENTS, "") == ([2.0], [8.0])


def test_pairs_completed_before_the_cursor_are_not_counted_again() -> None:
    assert rto.from_events(EVENTS, EVENTS[2].id) == ([], [8.0])
    assert rto.from_events(EVENTS, EVENTS[-1].id) == ([], [])


def test_the_window_keeps_the_last_values_and_their_p99() -> None:
    doc = rto.merge({}, [1.0] * (rto.WINDOW - 1), [], drill="d")
    doc = rto.merge(doc, [5.0, 7.0, 9.0], [30.0])
    assert len(doc["promote_samples"]) == rto.WINDOW and doc["promote_samples"][-1] == 9.0
    assert doc["promote_s"] == 5.0 and doc["restore_s"] == 30.0 and doc["drill"] == "d"


def test_a_drill_report_gives_its_promotions_and_restorations() -> None:
    rep = {
        "vnfs": [
            {"rto_s": 1.5, "redundancy_restored_s": 40.0},
            {"rto_s": 0.0, "redundancy_restored_s": "not restored: cut"},
            {"rto_s": None, "redundancy_restored_s": 12.0},
        ]
    }
    assert rto.from_report(rep) == ([1.5], [40.0, 12.0])


def test_estimates_use_what_was_measured_else_settings() -> None:
    s = BrokerSettings()
    assert whatif.Rto.from_settings(s, rto.estimates(None)).restore_s == s.vnf.ready_timeout_s
    raw = json.dumps(rto.merge({}, [2.5], [33.0])).encode()
    est = whatif.Rto.from_settings(s, rto.estimates(raw))
    assert (est.promote_s, est.restore_s) == (2.5, 33.0)
    only = whatif.Rto.from_settings(s, rto.estimates(json.dumps({"promote_s": 1.0}).encode()))
    assert (only.promote_s, only.restore_s) == (1.0, s.vnf.ready_timeout_s)
