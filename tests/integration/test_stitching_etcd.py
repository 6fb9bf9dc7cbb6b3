"""The stitching ledger on real etcd: concurrent allocators, a deposed leader, a restart.

Three replicas allocate and free networks at once. Only the one holding the current fence
lands anything; the leader is deposed mid-run (its lease revoked, as an expiry does) and
its allocator keeps trying; the new leader's allocator starts from etcd. The check is on
etcd's recorded history (a watch from before the first write), not on what the clients
believe: no held value is ever created twice, and no two held blocks ever overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random

import pytest

from broker import errors
from broker.election import campaign
from broker.settings import ElectionSettings, StitchingSettings
from broker.stitching.ledger import HELD, Ledger, Request
from broker.store import keys
from broker.store.etcd import EtcdStore
from broker.store.protocol import EventType
from tests.support import etcd as etcd_support

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

SETTINGS = StitchingSettings(
    supernets={"*": ("10.70.0.0/20",)},
    external_prefixes=("10.70.4.0/22",),
    vni_range=(1, 40),
    rt_range=(1, 40),
    vlan_range=(2, 30),
)


async def churn(ledger: Ledger, name: str, rounds: int, results: list[str]) -> None:
    rng = random.Random(name)
    mine: list[str] = []
    for i in range(rounds):
        try:
            if mine and rng.random() < 0.4:
                await ledger.release(mine.pop(rng.randrange(len(mine))))
            else:
                net = f"{name}-{i}"
                size = rng.choice(["/24", "/25", "/26", "/23"])
                await ledger.allocate(Request(net, "t", cidr=size, vlans=(("s1", "p"),)))
                mine.append(net)
            results.append("ok")
        except errors.AllocationRefused:
            results.append("refused")
        except errors.FencedOut:
            results.append("fenced")
        except errors.Conflict:  # two allocators under one fence fought: retry later
            results.append("conflict")


async def replay(store: EtcdStore, start: int, end: int) -> list[str]:
    """Walk the history of ``ipam/held/`` up to ``end``; every duplicate or overlap."""
    problems: list[str] = []
    held: set[str] = set()
    blocks: dict[str, ipaddress.IPv4Network] = {}
    events = store.watch_prefix(HELD, start_revision=start + 1)
    seen = 0
    while True:
        try:
            ev = await asyncio.wait_for(anext(events), 3.0)
        except TimeoutError:
            break  # the history is read: nothing more under held/ up to now
        seen += 1
        name = ev.key[len(HELD) :]
        if ev.type is EventType.PUT:
            if name in held:
                problems.append(f"rev {ev.mod_revision}: {name} created while held")
            held.add(name)
            if name.startswith("cidr/"):
                net = ipaddress.IPv4Network(name[5:].replace("_", "/"))
                problems += [f"{net} overlaps {o}" for o in blocks.values() if o.overlaps(net)]
                blocks[name] = net
        else:
            held.discard(name)
            blocks.pop(name, None)
        if ev.mod_revision >= end:
            break
    assert seen > 100, f"only {seen} events replayed"
    with contextlib.suppress(Exception):
        await events.aclose()  # type: ignore[attr-defined]
    return problems


async def test_only_the_fenced_allocator_lands_and_history_has_no_duplicate(
    etcd_server: etcd_support.Cluster, etcd_root: str
) -> None:
    stores = [EtcdStore.from_settings(etcd_server.settings(root=etcd_root)) for _ in range(4)]
    try:
        _, start = await stores[0].get_prefix(keys.IPAM)
        a = campaign.Campaign(stores[0], "a", ElectionSettings(lease_ttl=2))
        run_a = asyncio.create_task(a.run())
        term = await asyncio.wait_for(a.wait_leading(), 15)
        stale = Ledger(stores[1], term.fence - 1, SETTINGS)  # a fence from no live term
        lead = [Ledger(stores[2], term.fence, SETTINGS), Ledger(stores[3], term.fence, SETTINGS)]
        results: dict[str, list[str]] = {n: [] for n in ("stale", "l0", "l1")}
        await asyncio.gather(
            churn(stale, "stale", 40, results["stale"]),
            churn(lead[0], "l0", 120, results["l0"]),
            churn(lead[1], "l1", 120, results["l1"]),
        )
        assert "ok" not in results["stale"] and "fenced" in results["stale"]
        assert results["l0"].count("ok") > 50 and results["l1"].count("ok") > 50

        # the leader is deposed (its lease revoked, as an expiry does); b takes over
        b = campaign.Campaign(stores[1], "b", ElectionSettings(lease_ttl=2))
        run_b = asyncio.create_task(b.run())
        run_a.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run_a
        new = await asyncio.wait_for(b.wait_leading(), 15)
        after = Ledger(stores[1], new.fence, SETTINGS)
        old: list[str] = []
        await asyncio.gather(churn(lead[0], "old", 20, old), churn(after, "new", 80, results["l0"]))
        assert "ok" not in old and "fenced" in old
        restarted = Ledger(stores[2], new.fence, SETTINGS)
        await restarted.load()
        assert restarted.records == after.records
        run_b.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run_b
        _, end = await stores[0].get_prefix(keys.IPAM)
        assert await asyncio.wait_for(replay(stores[0], start, end), 30) == []
    finally:
        for s in stores:
            await s.close()
