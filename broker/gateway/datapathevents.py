"""Events from a site's data-path status: a refused profile and drift go to the event log.

The agent reports its ``datapath`` object like any other; what an operator must hear of
— the profile refused (unknown PF, too many VFs, a foreign bridge, ...), or the host
changed by hand (drift, corrected or only reported) — also becomes an event, written in
the same transaction as the status. Once per (object, generation, state): an agent that
reconnects replays its statuses, and a replay of what the last status already told
writes no second event.
"""

from __future__ import annotations

from collections.abc import Mapping

from meridian.v1 import agent_pb2 as pb

from broker import errors
from broker.gateway import convert
from broker.models import event as events
from broker.models import objects
from broker.store.protocol import Store


def event_for(site: str, st: pb.ObjectStatus, *, replica: str = "") -> events.Event | None:
    if st.kind != objects.DATAPATH.name:
        return None
    if st.state == pb.OBJECT_STATE_FAILED:
        again = " (the agent retries)" if st.temporary else ""
        return events.new(
            "site.datapath.failed",
            site,
            f"data-path profile generation {st.observed_generation} of site {site} not"
            f" applied{again}: {st.message}",
            replica=replica,
        )
    drift = st.outputs.get("drift")
    if drift:
        return events.new(
            "site.datapath.drift", site, f"site {site}: {st.message}", replica=replica
        )
    return None


async def already_told(
    store: Store, key: str, st: pb.ObjectStatus, pending: Mapping[str, bytes]
) -> bool:
    """The object's last status (still waiting in ``pending``, or stored under ``key``)
    told the same generation and state, and the same drift: its event was written then.
    When etcd cannot say, ``False``: an event twice rather than none."""
    raw = pending.get(key)
    if raw is None:
        try:
            found = await store.get(key)
        except errors.StoreUnavailable:
            return False
        if found is None:
            return False
        raw = found.value
    try:
        told = objects.Status.decode(raw)
    except errors.InvalidInput:
        return False
    now = convert.status_from_wire(st, 0)
    return (told.observed_generation, told.state, told.outputs.get("drift")) == (
        now.observed_generation,
        now.state,
        now.outputs.get("drift"),
    )
