"""The VLAN allocator (``Ledger.hold_vlans``): hypothesis drives random hold/release
sequences for several owners through two ledgers on one store (a stale in-memory view
must conflict, never duplicate) and checks, after every step, that no id is held twice in
a pool, that the store's held keys are exactly the records' ids, that asked ids are given
or refused for a stated reason, that a key an owner keeps keeps its id, and that a refusal
is made exactly when nothing fits."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import errors
from broker.settings import StitchingSettings
from broker.stitching.ledger import HELD, SEGMENTS, Ledger
from broker.store import keys
from broker.store.memory import MemoryStore

LO, HI = 10, 13  # four ids per pool: exhaustion is reached often
KEYS = [f"{link}@{site}/phys" for link in ("a", "b", "c") for site in ("s1", "s2")]
OWNERS = ["v0", "v1", "v2", "v3"]
SMALL = StitchingSettings(vlan_range=(LO, HI))

wants = st.dictionaries(st.sampled_from(KEYS), st.none() | st.integers(LO - 1, HI), max_size=4)
steps = st.lists(
    st.tuples(st.sampled_from(["hold", "release"]), st.sampled_from(OWNERS), wants, st.booleans()),
    max_size=25,
)


def pool(key: str) -> str:
    return key.split("@", 1)[1]


def fits(want: dict[str, int | None], others: dict[str, set[int]]) -> bool:
    """Whether every pool can give ``want`` beside what other owners hold there."""
    for p in {pool(k) for k in want}:
        mine = [v for k, v in want.items() if pool(k) == p]
        asked = [v for v in mine if v is not None]
        taken = others.get(p, set())
        if any(not LO <= v <= HI for v in asked) or len(set(asked)) != len(asked):
            return False
        if set(asked) & taken or len(taken | set(asked)) + mine.count(None) > HI - LO + 1:
            return False
    return True


async def state(store: MemoryStore) -> dict[str, dict[str, int]]:
    """Every owner's record, after checking the held keys are exactly the records' ids."""
    records, _ = await store.get_prefix(SEGMENTS)
    held, _ = await store.get_prefix(f"{HELD}vlan/")
    owners = {json.loads(kv.value)["owner"]: json.loads(kv.value)["vlans"] for kv in records}
    claimed = Counter((pool(k), v) for vlans in owners.values() for k, v in vlans.items())
    assert all(n == 1 for n in claimed.values()), f"held twice: {claimed}"
    from_keys = {
        (kv.key.removeprefix(f"{HELD}vlan/").rsplit("/", 1)[0], int(kv.key.rsplit("/", 1)[1]))
        for kv in held
    }
    assert from_keys == set(claimed)
    return owners


async def run(seq: list[tuple[str, str, dict[str, int | None], bool]]) -> None:
    store = MemoryStore()
    await store.put(keys.LEADER, b"me")
    kv = await store.get(keys.LEADER)
    assert kv is not None
    ledgers = [Ledger(store, kv.create_revision, SMALL), Ledger(store, kv.create_revision, SMALL)]
    for op, owner, want, second in seq:
        ledger = ledgers[second]
        before = await state(store)
        if op == "release":
            await ledger.release_vlans(owner)
            assert owner not in await state(store)
            continue
        others: dict[str, set[int]] = {}
        for o, vlans in before.items():
            if o != owner:
                for k, v in vlans.items():
                    others.setdefault(pool(k), set()).add(v)
        try:
            got = await ledger.hold_vlans(owner, want)
        except errors.AllocationRefused:
            assert not fits(want, others), f"refused {want} beside {others}"
            assert (await state(store)).get(owner) == before.get(owner)  # nothing lost
            continue
        assert fits(want, others), f"gave {got} for {want} beside {others}"
        assert set(got) == set(want)
        assert all(want[k] is None or got[k] == want[k] for k in want)
        kept = before.get(owner, {})
        asked = {(pool(k), v) for k, v in want.items() if v is not None}
        assert all(
            got[k] == kept[k]
            for k in want
            if want[k] is None and k in kept and (pool(k), kept[k]) not in asked
        )
        assert all(LO <= v <= HI for v in got.values())
        if want or owner in before:
            assert (await state(store))[owner] == got
    await store.close()


@settings(max_examples=120, deadline=None)
@given(steps)
def test_random_holds_and_releases_never_duplicate_never_exhaust_early(
    seq: list[tuple[str, str, dict[str, int | None], bool]],
) -> None:
    asyncio.run(run(seq))


async def test_a_deposed_leader_holds_nothing_and_concurrent_holds_never_collide() -> None:
    store = MemoryStore()
    old = await store.put(keys.LEADER, b"old")
    await store.delete(keys.LEADER)
    new = await store.put(keys.LEADER, b"new")
    with pytest.raises(errors.FencedOut):
        await Ledger(store, old, SMALL).hold_vlans("v0", {"a@s1/phys": None})
    assert (await store.get_prefix(keys.IPAM))[0] == []
    one, two = Ledger(store, new, SMALL), Ledger(store, new, SMALL)
    got = await asyncio.gather(
        *((one if i % 2 else two).hold_vlans(f"v{i}", {"a@s1/phys": None}) for i in range(4))
    )
    assert sorted(g["a@s1/phys"] for g in got) == [10, 11, 12, 13]
    with pytest.raises(errors.PoolExhausted, match="all 4 values"):
        await one.hold_vlans("v9", {"a@s1/phys": None})


async def test_an_owner_keeps_its_ids_unless_it_asks_for_one_of_them_elsewhere() -> None:
    store = MemoryStore()
    ledger = Ledger(store, await store.put(keys.LEADER, b"me"), SMALL)
    assert await ledger.hold_vlans("v0", {"a@s1/phys": None}) == {"a@s1/phys": 10}
    more = await ledger.hold_vlans("v0", {"a@s1/phys": None, "a@s2/phys": None})
    assert more == {"a@s1/phys": 10, "a@s2/phys": 10}  # kept, and the new site's
    swapped = await ledger.hold_vlans("v0", {"a@s1/phys": None, "b@s1/phys": 10})
    assert swapped == {"a@s1/phys": 11, "b@s1/phys": 10}
