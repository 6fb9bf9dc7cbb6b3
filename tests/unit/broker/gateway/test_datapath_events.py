"""A site's data-path status becomes an event when it was refused or found drift, once
per (object, generation, state): a reconnecting agent's replay writes no second one."""

from __future__ import annotations

from meridian.v1 import agent_pb2 as pb

from broker.gateway import datapathevents, statuswriter
from broker.gateway.sessions import Session
from broker.models import codec
from broker.models import event as events
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.support.gateway import gateway_on


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


def session(n: int) -> Session:
    return Session("edge-1", f"s{n}", serial=n, protocol="v1", agent_version="t", connected_ms=0)


async def told(store: MemoryStore, reports: list[tuple[int, pb.ObjectStatus]]) -> list[str]:
    """The gateway fed each (session number, status), its stream's writer writing each
    before the next (each report on a stream of its own); the events it wrote, oldest
    first."""
    gateway = gateway_on(store)
    for n, st in reports:
        writer = statuswriter.StatusWriter(store)
        await gateway._status(session(n), st, writer)
        assert await writer.write_once() and not writer.pending
    found, _ = await store.get_prefix(keys.EVENTS)
    return [codec.decode(events.Event, kv.value).message for kv in found]


async def test_a_replayed_status_writes_its_event_once(memory_store: MemoryStore) -> None:
    failed = status(state=pb.OBJECT_STATE_FAILED, message="unknown PF ens9")
    drift = {"drift": "bridge br-ex is foreign"}
    drifted = status(state=pb.OBJECT_STATE_READY, message="drift: br-ex", outputs=drift)
    newer = status(state=pb.OBJECT_STATE_FAILED, message="unknown PF ens9", observed_generation=4)
    written = await told(
        memory_store,
        [
            (1, failed),
            (2, failed),  # the agent reconnected and replays its statuses
            (2, drifted),
            (3, drifted),
            (3, newer),  # a new generation refused: a new fact
            (4, newer),
        ],
    )
    assert written == [
        "data-path profile generation 3 of site edge-1 not applied: unknown PF ens9",
        "site edge-1: drift: br-ex",
        "data-path profile generation 4 of site edge-1 not applied: unknown PF ens9",
    ]


async def test_a_status_still_waiting_for_etcd_counts_as_told(memory_store: MemoryStore) -> None:
    gateway = gateway_on(memory_store)
    failed = status(state=pb.OBJECT_STATE_FAILED, message="too many VFs")
    writer = statuswriter.StatusWriter(memory_store)
    await gateway._status(session(1), failed, writer)
    await gateway._status(session(2), failed, writer)
    assert sum(key.startswith(keys.EVENTS) for key in writer.pending) == 1
