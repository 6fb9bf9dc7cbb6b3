"""What etcd recorded during a failover, replayed revision by revision (issue 10).

``history`` reads every event under some prefixes from a start revision to an end
revision (etcd's own history, not samples). ``most_active`` replays the ``observed/``
server statuses of one VNF with the sites' ``health/`` and returns the largest number of
members that reported active at once: a status counts from the revision its agent wrote
it until its site is declared DOWN (a report the site made before it was lost is not
repeated when the site returns; only a new write counts again).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from broker.models import objects
from broker.models.site import Health, SiteHealth
from broker.models import codec
from broker.store import keys
from broker.store import protocol as p

IDLE_S = 3.0
"""A history watch has delivered everything once it stays quiet this long."""


async def history(store: p.Store, prefix: str, start: int, end: int) -> list[p.WatchEvent]:
    """Every event under ``prefix`` with ``start <= revision <= end``."""
    out: list[p.WatchEvent] = []
    watch = store.watch_prefix(prefix, start_revision=start)
    try:
        with contextlib.suppress(TimeoutError, StopAsyncIteration):
            while True:
                ev = await asyncio.wait_for(anext(watch), IDLE_S)
                if ev.mod_revision > end:
                    break
                out.append(ev)
    finally:
        await watch.aclose()  # type: ignore[attr-defined]
    return out


def vnf_of(server: str) -> str:
    """The VNF id of a server named ``<vnf>-<vdu>-<index>`` (VDU names have no dash)."""
    return server.rsplit("-", 2)[0]


def most_active(events: Iterable[p.WatchEvent], vnf_id: str) -> tuple[int, int]:
    """(the most members of ``vnf_id`` reporting active at one revision, statuses seen)."""
    peaks, seen = peak_actives(events, lambda name: name.startswith(f"{vnf_id}-"))
    return peaks.get(vnf_id, 0), seen


def peak_actives(
    events: Iterable[p.WatchEvent], wanted: Callable[[str], bool] = lambda name: True
) -> tuple[dict[str, int], int]:
    """Per VNF (servers ``wanted`` by name), the most members reporting active at one
    revision; and how many statuses were replayed."""
    reported: dict[str, tuple[str, bool]] = {}  # server key -> (site, active)
    count: dict[str, int] = {}  # vnf -> members reporting active now
    peaks: dict[str, int] = {}
    seen = 0

    def put(key: str, site: str, active: bool | None) -> None:
        vnf = vnf_of(keys.split_object(key)[2])
        was = reported.pop(key, ("", False))[1]
        if active is not None:
            reported[key] = (site, active)
        count[vnf] = count.get(vnf, 0) + int(bool(active)) - int(was)
        peaks[vnf] = max(peaks.get(vnf, 0), count[vnf])

    ordered = sorted(events, key=lambda e: e.mod_revision)
    down: set[str] = set()
    for ev in ordered:
        if ev.key.startswith(keys.HEALTH):
            site = keys.name_in(keys.HEALTH, ev.key)
            state = codec.decode(SiteHealth, ev.value).state if ev.value else Health.UNKNOWN
            if state is Health.DOWN:
                down.add(site)
                for key in [k for k, v in reported.items() if v[0] == site]:
                    put(key, site, None)
            else:
                down.discard(site)
        elif ev.key.startswith(keys.OBSERVED):
            site, kind, name = keys.split_object(ev.key)
            if kind != "server" or not wanted(name):
                continue
            seen += 1
            if not ev.value:
                put(ev.key, site, None)
                continue
            st = objects.Status.decode(ev.value)
            live = st.state is objects.State.READY and site not in down
            put(ev.key, site, live and st.outputs.get("role") == "active")
    return peaks, seen
