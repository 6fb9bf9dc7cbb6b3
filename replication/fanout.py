"""Runs a relay fan-out: plan the tree, copy every hop, re-plan what failed for want of
a source, until every destination is active or failed.

With ``pipelined`` (the default) a hop starts as soon as its source has *started*
receiving: the source relays its verified prefix as it grows (``store.MemoryBytes`` and
the agent's store do this), so the whole tree streams at once and N destinations take
about one transfer time plus a chunk per level, not ``log2 N`` transfer times. Without
it, a round starts when the previous one is active.

Per-site isolation: a hop that fails because of its destination (cache full, upload
rejected, bytes not matching) fails only that site; a hop that failed because its relay
source went away is re-planned from the sites that did finish, up to ``passes`` times.
Invariant: every destination verifies the whole image itself before it is active
(invariant 8) — relaying a prefix never relays trust.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from replication import errors, planner
from replication.catalog import ImageId, Replica, SiteId, State

Progress = Callable[[int, float], Awaitable[None]]
CopyHop = Callable[[planner.Hop, Progress], Awaitable[None]]
OnChange = Callable[[Replica], Awaitable[None]]

_SOURCE_SIDE = (errors.SourceFailed, errors.PeerGone, errors.UnknownImage)


@dataclass(frozen=True, slots=True)
class Result:
    replicas: Mapping[SiteId, Replica]
    rounds: int  # relay levels used, summed over passes

    def failed(self) -> dict[SiteId, str]:
        return {s: r.reason for s, r in self.replicas.items() if r.state is State.FAILED}


async def run(
    image: ImageId,
    holders: Iterable[SiteId],
    destinations: Iterable[SiteId],
    copy_hop: CopyHop,
    *,
    cap: int = 1,
    concurrency: int = 64,
    priority: Mapping[SiteId, int] | None = None,
    on_change: OnChange | None = None,
    pipelined: bool = True,
    passes: int = 3,
) -> Result:
    """Fan the image out; ``copy_hop`` moves the bytes of one hop or raises."""
    have = set(holders)
    seeds = frozenset(have)
    prio = priority or {}
    replicas = {
        s: Replica(image, s, priority=prio.get(s, 0)).queue() for s in set(destinations) - have
    }
    gate = asyncio.Semaphore(concurrency)
    rounds = 0

    async def changed(r: Replica) -> None:
        replicas[r.site] = r
        if on_change is not None:
            await on_change(r)

    for r in replicas.values():
        await changed(r)
    pending = set(replicas)
    for attempt in range(passes):
        if not pending:
            break
        plan = planner.plan(have, pending, cap=cap, priority=prio)
        rounds += len(plan.rounds)
        retry: set[SiteId] = set()
        started = {s: asyncio.Event() for s in pending}

        async def one(
            hop: planner.Hop,
            last: bool,
            started: dict[SiteId, asyncio.Event] = started,
            retry: set[SiteId] = retry,
        ) -> None:
            site = hop.destination
            if hop.source in started:
                await started[hop.source].wait()
            async with gate:

                async def progress(offset: int, rate: float) -> None:
                    started[site].set()
                    await changed(replicas[site].progress(offset, rate))

                await changed(replicas[site].start())
                if pipelined:
                    started[site].set()
                try:
                    await copy_hop(hop, progress)
                except errors.ReplicationError as exc:
                    started[site].set()
                    relayed = hop.source not in seeds
                    if relayed and not last and isinstance(exc, _SOURCE_SIDE):
                        retry.add(site)
                        await changed(replicas[site].queue())
                    else:
                        await changed(replicas[site].fail(f"{type(exc).__name__}: {exc}"))
                    return
                started[site].set()
                await changed(replicas[site].verify())
                await changed(replicas[site].activate(replicas[site].offset))
                have.add(site)

        last = attempt == passes - 1
        if pipelined:
            await asyncio.gather(*(one(h, last) for h in plan.hops))
        else:
            for rnd in plan.rounds:
                await asyncio.gather(*(one(h, last) for h in rnd))
        pending = retry
    return Result(dict(replicas), rounds)
