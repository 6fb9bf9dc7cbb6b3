"""A site's data-path status becomes an event when it was refused or found drift."""

from __future__ import annotations

from meridian.v1 import agent_pb2 as pb

from broker.gateway import datapathevents


def status(**kw: object) -> pb.ObjectStatus:
    base: dict[str, object] = {"kind": "datapath", "name": "host", "observed_generation": 3}
    return pb.ObjectStatus(**{**base, **kw})  # type: ignore[arg-type]


def test_refused_profile_is_an_event() -> None:
    st = status(state=pb.OBJECT_STATE_FAILED, message="spec.sriov.0.vfs: 99 VFs asked")
    event = datapathevents.event_for("edge-1", st)
    assert event is not None and event.kind == "site.datapath.failed"
    assert event.subject == "edge-1"
    assert event.message == (
        "data-path profile generation 3 of site edge-1 not applied: spec.sriov.0.vfs: 99 VFs asked"
    )


def test_drift_is_an_event_and_a_quiet_ready_is_not() -> None:
    st = status(
        state=pb.OBJECT_STATE_READY,
        message="drift corrected: other_config:pmd-cpu-mask is '0x3', profile says '0x6'",
        outputs={"drift": "other_config:pmd-cpu-mask is '0x3', profile says '0x6'"},
    )
    event = datapathevents.event_for("edge-1", st)
    assert event is not None and event.kind == "site.datapath.drift"
    assert "pmd-cpu-mask" in event.message
    assert datapathevents.event_for("edge-1", status(state=pb.OBJECT_STATE_READY)) is None
    other = pb.ObjectStatus(kind="server", name="s", state=pb.OBJECT_STATE_FAILED)
    assert datapathevents.event_for("edge-1", other) is None
