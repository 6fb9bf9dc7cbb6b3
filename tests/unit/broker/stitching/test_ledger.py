"""The fenced allocation ledger on the in-memory store (the same Protocol as etcd)."""

from __future__ import annotations

import asyncio

import pytest

from broker import errors
from broker.settings import StitchingSettings
from broker.stitching.ledger import HELD, Ledger, Request
from broker.store import keys
from broker.store.memory import MemoryStore

SMALL = StitchingSettings(
    supernets={"*": ("10.50.0.0/22",), "acme/eu": ("10.60.0.0/24",)},
    external_prefixes=("10.50.0.0/24",),
    vni_range=(100, 104),
    rt_range=(1, 100),
    vlan_range=(10, 11),
)


async def leader(store: MemoryStore) -> int:
    await store.put(keys.LEADER, b"broker-1")
    kv = await store.get(keys.LEADER)
    assert kv is not None
    return kv.create_revision


async def test_allocates_whole_and_idempotently_and_releases() -> None:
    store = MemoryStore()
    ledger = Ledger(store, await leader(store), SMALL)
    a = await ledger.allocate(Request("n1", "t", vlans=(("s1", "phys"),)))
    assert (a.cidr, a.vni, a.rt, dict(a.vlans)) == ("10.50.1.0/24", 100, "64512:1", {"s1/phys": 10})
    assert await ledger.allocate(Request("n1", "t")) == a  # a retried create hands out nothing
    b = await ledger.allocate(Request("n2", "acme", "eu", cidr="/25"))
    assert b.cidr == "10.60.0.0/25"
    fresh = Ledger(store, ledger.fence, SMALL)  # a restarted leader sees the same
    await fresh.load()
    assert fresh.records == {"n1": a, "n2": b}
    assert await fresh.release("n1") == a
    assert await fresh.release("n1") is None
    held, _ = await store.get_prefix(HELD)
    assert sorted(kv.value for kv in held) == [b"n2"] * 3


@pytest.mark.parametrize(
    ("cidr", "error", "problem"),
    [
        ("10.50.0.128/25", errors.AddressOverlap, r"overlaps 10.50.0.0/24 \(external\)"),
        ("10.50.0.0/33", errors.InvalidInput, "10.50.0.0/33"),
        ("/30", errors.InvalidInput, "/8 to /29"),
        ("/21", errors.PoolExhausted, "no free /21 in 10.50.0.0/22"),
    ],
)
async def test_bad_asks_are_refused_and_leave_nothing(
    cidr: str, error: type[Exception], problem: str
) -> None:
    store = MemoryStore()
    ledger = Ledger(store, await leader(store), SMALL)
    with pytest.raises(error, match=problem):
        await ledger.allocate(Request("n1", "t", cidr=cidr))
    assert (await store.get_prefix(keys.IPAM))[0] == []
    ok = await ledger.allocate(Request("n1", "t"))
    assert ok.vni == 100  # nothing was kept from the refused try


async def test_vni_exhaustion_says_what_is_left_and_rolls_back_the_block() -> None:
    store = MemoryStore()
    ledger = Ledger(store, await leader(store), SMALL)
    for i in range(5):
        await ledger.allocate(Request(f"n{i}", "t", cidr=f"/{27}"))
    with pytest.raises(errors.PoolExhausted, match=r"vni 100..104: 0 of 5 free"):
        await ledger.allocate(Request("n5", "t", cidr="/27"))
    assert len(list(ledger.space.held())) == 6  # 5 networks + the external prefix


async def test_concurrent_allocators_never_hand_out_twice() -> None:
    store = MemoryStore()
    fence = await leader(store)
    one, two = Ledger(store, fence, SMALL), Ledger(store, fence, SMALL)
    got = await asyncio.gather(
        *((one if i % 2 else two).allocate(Request(f"n{i}", "t", cidr="/27")) for i in range(5))
    )
    assert len({a.vni for a in got}) == 5
    assert len({a.cidr for a in got}) == 5


async def test_a_deposed_leader_allocates_nothing() -> None:
    store = MemoryStore()
    old = await leader(store)
    await store.delete(keys.LEADER)
    new = await leader(store)
    with pytest.raises(errors.FencedOut):
        await Ledger(store, old, SMALL).allocate(Request("n1", "t"))
    assert (await store.get_prefix(keys.IPAM))[0] == []
    assert (await Ledger(store, new, SMALL).allocate(Request("n1", "t"))).vni == 100
