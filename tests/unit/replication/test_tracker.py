"""The tracker's choices: who swarms, whom each destination may ask (bounded), and the
piece lists sites compute from the bytes they serve."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from replication import pieces, tracker
from replication.catalog import ImageId, Replica, SiteId
from replication.transfer import Chunk

IMG = ImageId("img")


def replica(site: str, state: str) -> Replica:
    r = Replica(IMG, SiteId(site)).queue()
    if state in ("transferring", "active"):
        r = r.start(source="src", swarm=True)
    if state == "active":
        r = r.verify().activate(10)
    return r


def world(n: int) -> tuple[dict[SiteId, Replica], dict[str, str]]:
    reps = {SiteId("src"): replica("src", "active"), SiteId("h1"): replica("h1", "active")}
    reps |= {SiteId(f"d{i:03d}"): replica(f"d{i:03d}", "transferring") for i in range(n)}
    reps[SiteId("nat")] = replica("nat", "transferring")
    addresses = {s: f"10.0.0.{i}:7000" for i, s in enumerate(reps) if s != "nat"}
    return reps, addresses


def test_holders_come_first_then_members_never_itself_nor_a_site_behind_nat() -> None:
    reps, addresses = world(5)
    got = tracker.peers(SiteId("d000"), reps, addresses)
    assert set(got[:2]) == {"src", "h1"}
    assert set(got[2:]) == {"d001", "d002", "d003", "d004"}
    assert "d000" not in got and "nat" not in got


def test_peers_are_bounded_and_spread_however_many_sites_swarm() -> None:
    reps, addresses = world(500)
    named: dict[str, int] = {}
    for i in range(500):
        got = tracker.peers(SiteId(f"d{i:03d}"), reps, addresses)
        assert len(got) == tracker.MAX_PEERS
        for peer in got[2:]:
            named[peer] = named.get(peer, 0) + 1
    # each destination asks a different few: no member is everyone's peer
    assert max(named.values()) < 100, max(named.values())


def test_a_member_leaving_moves_only_its_own_place() -> None:
    reps, addresses = world(40)
    before = tracker.peers(SiteId("d000"), reps, addresses)
    gone = before[5]
    del reps[SiteId(gone)]
    after = tracker.peers(SiteId("d000"), reps, addresses)
    assert [p for p in before if p != gone] == after[: len(before) - 1]


def test_only_a_destination_that_serves_directly_swarms_and_only_from_seeds() -> None:
    reps, addresses = world(2)
    connected = frozenset(reps)
    seeds = tracker.seeds(reps, addresses, connected)
    assert seeds == ["h1", "src"]
    assert tracker.swarms(SiteId("d000"), addresses, seeds)
    assert not tracker.swarms(SiteId("nat"), addresses, seeds)
    assert not tracker.swarms(SiteId("d000"), addresses, [])
    assert tracker.seeds(reps, addresses, frozenset({"src"})) == ["src"]


class Uneven:
    """Serves ``data`` in chunks that never fall on piece boundaries."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def chunks(self, image: ImageId, offset: int, chunk_size: int) -> AsyncIterator[Chunk]:
        at = offset
        while at < len(self.data):
            n = 77_777
            yield Chunk.of(at, self.data[at : at + n])
            at += n


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 3 * (1 << 20) + 5])
async def test_a_piece_list_from_a_source_is_the_one_of_its_bytes(size: int) -> None:
    data = os.urandom(size)
    got = await pieces.manifest_of_source(Uneven(data), IMG, size, 1 << 20)
    assert got == pieces.manifest_of(data, 1 << 20)


def test_piece_lists_stay_within_what_the_catalog_records() -> None:
    assert pieces.piece_size_for(64 << 20) == pieces.DEFAULT_PIECE
    assert pieces.piece_size_for(64 << 20, 1 << 20) == 1 << 20
    for size in (16 << 30, 100 << 30, (100 << 30) + 1):
        piece = pieces.piece_size_for(size)
        assert -(-size // piece) <= pieces.MAX_RECORDED and piece % (1 << 20) == 0
