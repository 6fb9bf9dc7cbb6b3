"""Events from a site's data-path status: a refused profile and drift go to the event log.

The agent reports its ``datapath`` object like any other; what an operator must hear of
— the profile refused (unknown PF, too many VFs, a foreign bridge, ...), or the host
changed by hand (drift, corrected or only reported) — also becomes an event, written in
the same transaction as the status.
"""

from __future__ import annotations

from meridian.v1 import agent_pb2 as pb

from broker.models import event as events
from broker.models import objects


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
