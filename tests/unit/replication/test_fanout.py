"""Fan-out execution over in-memory stores: relay rounds, per-site failure isolation."""

from __future__ import annotations

import hashlib
import asyncio
import math
import os
from collections.abc import Awaitable, Callable

import pytest

from replication import catalog, errors, fanout, planner, transfer
from replication.catalog import ImageId, Replica, SiteId, State
from replication.store import MemoryBytes

DATA = os.urandom(50_000)
IMG = catalog.Image(
    id=ImageId("img"),
    name="n",
    size=len(DATA),
    sha256=hashlib.sha256(DATA).hexdigest(),
    source_site=SiteId("src"),
)


def stores(n: int, **special: MemoryBytes) -> dict[SiteId, MemoryBytes]:
    out = {SiteId(f"d{i:02d}"): MemoryBytes() for i in range(n)}
    out.update({SiteId(k): v for k, v in special.items()})
    src = MemoryBytes()
    src.put(IMG.id, DATA)
    out[SiteId("src")] = src
    return out


def copier(
    s: dict[SiteId, MemoryBytes], served: list[planner.Hop]
) -> Callable[[planner.Hop, Callable[[int, float], Awaitable[None]]], Awaitable[None]]:
    async def copy_hop(hop: planner.Hop, progress: Callable[[int, float], Awaitable[None]]) -> None:
        served.append(hop)
        if hop.destination not in s:
            raise errors.UnknownSite(hop.destination)
        await transfer.copy(
            IMG, s[hop.source], s[hop.destination], chunk_size=4096, progress=progress
        )

    return copy_hop


@pytest.mark.parametrize("n", [1, 2, 5, 16])
async def test_every_site_gets_verified_bytes_in_log_rounds(n: int) -> None:
    s = stores(n)
    served: list[planner.Hop] = []
    seen: list[Replica] = []

    async def on_change(r: Replica) -> None:
        seen.append(r)

    res = await fanout.run(
        IMG.id,
        [SiteId("src")],
        [x for x in s if x != "src"],
        copier(s, served),
        on_change=on_change,
    )
    assert all(st.get(IMG.id) == DATA for st in s.values())
    assert res.rounds <= math.ceil(math.log2(n + 1))
    assert all(r.state is State.ACTIVE for r in res.replicas.values())
    relays = {h.source for h in served} - {SiteId("src")}
    assert bool(relays) == (n > 2), "sites that received serve the next round"
    states = [r.state for r in seen if r.site == SiteId("d00")]
    assert states[0] is State.QUEUED and states[-2:] == [State.VERIFYING, State.ACTIVE]


async def test_failures_are_per_site_and_the_rest_carries_on() -> None:
    s = stores(
        6,
        full=MemoryBytes(capacity=10),
        picky=MemoryBytes(reject="disk format not allowed"),
    )
    dests = [x for x in s if x != "src"] + [SiteId("ghost")]
    res = await fanout.run(IMG.id, [SiteId("src")], dests, copier(s, []))
    failed = res.failed()
    assert set(failed) == {"full", "picky", "ghost"}
    assert "CacheFull" in failed["full"] and "disk format" in failed["picky"]
    assert "ghost" in failed["ghost"]
    for site, st in s.items():
        if site not in failed:
            assert st.get(IMG.id) == DATA
        else:
            assert not st.has(IMG.id)


async def test_priority_site_served_first() -> None:
    s = stores(4)
    served: list[planner.Hop] = []
    await fanout.run(
        IMG.id,
        [SiteId("src")],
        [x for x in s if x != "src"],
        copier(s, served),
        priority={SiteId("d03"): 100},
    )
    assert served[0].destination == "d03"


async def test_a_failed_relay_is_replanned_from_holders() -> None:
    s = stores(6, d00=MemoryBytes(capacity=10))
    served: list[planner.Hop] = []
    res = await fanout.run(IMG.id, [SiteId("src")], [x for x in s if x != "src"], copier(s, served))
    assert res.failed().keys() == {"d00"} and "CacheFull" in res.failed()["d00"]
    children = {h.destination for h in served if h.source == "d00"}
    assert children, "the plan relayed through d00"
    for child in children:
        assert res.replicas[child].state is State.ACTIVE
        assert res.replicas[child].attempts == 2
        assert s[child].get(IMG.id) == DATA


async def test_round_by_round_mode() -> None:
    s = stores(7)
    res = await fanout.run(
        IMG.id, [SiteId("src")], [x for x in s if x != "src"], copier(s, []), pipelined=False
    )
    assert res.failed() == {} and res.rounds == 3
    assert all(st.get(IMG.id) == DATA for st in s.values())


async def test_a_store_relays_its_verified_prefix_while_receiving() -> None:
    src, mid, end = stores(0)[SiteId("src")], MemoryBytes(), MemoryBytes()
    first = asyncio.create_task(transfer.copy(IMG, src, mid, chunk_size=1000))
    await asyncio.sleep(0)
    second = asyncio.create_task(transfer.copy(IMG, mid, end, chunk_size=1000))
    await asyncio.gather(first, second)
    assert mid.get(IMG.id) == DATA and end.get(IMG.id) == DATA


async def test_a_discarded_relay_copy_fails_its_readers() -> None:
    bad = catalog.Image(
        id=IMG.id, name="n", size=IMG.size, sha256="0" * 64, source_site=SiteId("src")
    )
    src, mid, end = stores(0)[SiteId("src")], MemoryBytes(), MemoryBytes()
    first = asyncio.create_task(transfer.copy(bad, src, mid, chunk_size=1000))
    await asyncio.sleep(0)
    second = asyncio.create_task(transfer.copy(bad, mid, end, chunk_size=1000, max_retries=0))
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(results[0], errors.ImageMismatch)
    assert isinstance(results[1], errors.ReplicationError)
    assert not mid.has(IMG.id) and not end.has(IMG.id)
