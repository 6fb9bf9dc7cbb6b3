"""Swarming on real mTLS: destinations fetch an image's pieces from every holder.

Every site runs a ``directwire.DirectServer`` on its own address with the federation's
certificates; each destination holds a broker-signed grant (naming the piece list) for
every other site, and swarms with ``swarmwire.receive``: it asks each peer which pieces it
holds, fetches the rarest first, verifies each against the manifest and re-serves it.
Proven here: the destinations trade pieces (the source's capped upload carries less than
one copy per destination); a destination killed mid-transfer leaves the others to finish
and resumes from the pieces it verified; a peer serving corrupt bytes is reported and
excluded, its pieces fetched elsewhere, nothing corrupt stored; a grant for another piece
list is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from broker.pki.layout import Layout
from replication import catalog, errors, grant, pieces
from replication.swarm import Progress
from replication.catalog import ImageId, SiteId
from replication.pieces import Manifest, PieceFile
from replication.throttle import Throttle
from siteagent import directwire, swarmwire
from siteagent.directwire import CHANNEL_OPTIONS
from siteagent.imagewire import SiteDir
from tests.support.etcd import free_ports
from tests.support.gateway import agent_credentials, make_pki, site_server_credentials

pytestmark = [pytest.mark.grpc]

PIECE = 256 * 1024
DATA = os.urandom(24 * PIECE + 1000)
IMG = catalog.Image(
    ImageId("img-vnf"),
    "vnf-base",
    len(DATA),
    hashlib.sha256(DATA).hexdigest(),
    SiteId("src"),
    os_hash_value=hashlib.sha512(DATA).hexdigest(),
)
MANIFEST = pieces.manifest_of(DATA, PIECE)
KEY = grant.Ed25519PrivateKey.generate()


def token(source: str, destination: str, digest: str = MANIFEST.digest()) -> str:
    expires = int((time.time() + 60) * 1000)
    return grant.sign(grant.Grant(IMG.id, source, destination, expires, digest), KEY)


@dataclass
class Site:
    name: str
    store: SiteDir
    service: directwire.DirectServer
    server: grpc.aio.Server
    address: str
    swarms: dict[ImageId, PieceFile] = field(default_factory=dict)


@dataclass
class Swarm:
    pki: Layout
    sites: dict[str, Site]
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def peers(self, me: str, digest: str = MANIFEST.digest()) -> list[swarmwire.GrantedPeer]:
        out = []
        for name, site in self.sites.items():
            if name == me:
                continue
            creds = agent_credentials(self.pki, me)
            channel = grpc.aio.secure_channel(site.address, creds, options=CHANNEL_OPTIONS)
            self.channels.append(channel)
            tok = token(name, me, digest)
            out.append(swarmwire.GrantedPeer(channel, name, tok, MANIFEST, chunk_size=65536))
        return out

    async def receive(
        self,
        me: str,
        reported: list[tuple[str, str]] | None = None,
        progress: Progress | None = None,
    ) -> object:
        site = self.sites[me]

        async def report(peer: str, why: str) -> None:
            if reported is not None:
                reported.append((peer, why))

        return await swarmwire.receive(
            site.store.root,
            IMG,
            MANIFEST,
            self.peers(me),
            site.swarms,
            seed=me,
            report=report,
            progress=progress,
            refresh=0.1,
        )


async def start_site(pki: Layout, root: Path, name: str, upload: float | None) -> Site:
    store = SiteDir(root / name)
    swarms: dict[ImageId, PieceFile] = {}
    throttle = Throttle(upload, burst=PIECE) if upload else None
    service = directwire.DirectServer(
        name, store, KEY.public_key(), throttle=throttle, swarms=swarms
    )
    creds = site_server_credentials(pki, name)
    (port,) = free_ports(1)
    server, _ = directwire.server(service, f"127.0.0.1:{port}", creds)
    await server.start()
    return Site(name, store, service, server, f"127.0.0.1:{port}", swarms)


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[object]:
    made: list[Swarm] = []

    async def build(names: list[str], *, src_upload: float | None = None) -> Swarm:
        pki = make_pki(tmp_path / "pki", names, serving=names)
        sites = {}
        for name in names:
            cap = src_upload if name == "src" else None
            sites[name] = await start_site(pki, tmp_path, name, cap)
        (sites["src"].store.root / f"{IMG.id}.img").write_bytes(DATA)
        made.append(Swarm(pki, sites))
        return made[-1]

    yield build
    for swarm in made:
        for site in swarm.sites.values():
            await site.server.stop(grace=None)
        for channel in swarm.channels:
            await channel.close(grace=None)


def whole(site: Site) -> bytes:
    return (site.store.root / f"{IMG.id}.img").read_bytes()


async def test_destinations_trade_pieces_and_each_verifies_the_whole(make: object) -> None:
    dests = ["d1", "d2", "d3", "d4"]
    swarm: Swarm = await make(["src", *dests], src_upload=4 << 20)  # type: ignore[operator]
    outs = await asyncio.gather(*(swarm.receive(d) for d in dests))
    for d in dests:
        assert whole(swarm.sites[d]) == DATA
        assert not (swarm.sites[d].store.root / f"{IMG.id}.swarm").exists()
    from_peers = sum(n for o in outs for s, n in o.pieces_from.items() if s != "src")  # type: ignore[attr-defined]
    assert from_peers > 0, "the destinations served each other verified pieces"
    served = swarm.sites["src"].service.served_bytes
    assert served < len(dests) * len(DATA), f"the source sent {served} bytes: no trading"


async def test_a_killed_destination_leaves_the_others_to_finish_and_resumes(make: object) -> None:
    dests = ["d1", "d2", "d3"]
    swarm: Swarm = await make(["src", *dests], src_upload=4 << 20)  # type: ignore[operator]
    victim = swarm.sites["d1"]
    enough = asyncio.Event()

    async def progress(held: int, rate: float) -> None:
        if held >= 4 * PIECE:
            enough.set()

    killed = asyncio.create_task(swarm.receive("d1", progress=progress))
    others = asyncio.gather(*(swarm.receive(d) for d in dests[1:]))
    await asyncio.wait_for(enough.wait(), 30)
    killed.cancel()  # the destination dies mid-transfer: its server too
    await asyncio.gather(killed, return_exceptions=True)
    await victim.server.stop(grace=None)
    await others
    for d in dests[1:]:
        assert whole(swarm.sites[d]) == DATA

    kept = PieceFile(victim.store.root, IMG, MANIFEST)
    await kept.open()
    assert 4 <= len(kept.held) < len(MANIFEST), "it kept the pieces it had verified"
    restarted = await start_site(swarm.pki, victim.store.root.parent, "d1", None)
    swarm.sites["d1"] = restarted
    out = await swarm.receive("d1")
    assert whole(restarted) == DATA
    fetched = sum(out.pieces_from.values())  # type: ignore[attr-defined]
    assert fetched == len(MANIFEST) - len(kept.held), "only the missing pieces were fetched"


async def test_a_corrupt_peer_is_reported_excluded_and_nothing_corrupt_is_stored(
    make: object,
) -> None:
    swarm: Swarm = await make(["src", "evil", "d1", "d2"], src_upload=2 << 20)  # type: ignore[operator]
    bad = bytearray(DATA)
    for at in range(0, len(bad), PIECE):
        bad[at + 7] ^= 0x40  # every piece it holds is corrupt; it claims the whole image
    (swarm.sites["evil"].store.root / f"{IMG.id}.img").write_bytes(bytes(bad))
    reported: list[tuple[str, str]] = []
    outs = await asyncio.gather(*(swarm.receive(d, reported) for d in ["d1", "d2"]))
    for d, out in zip(["d1", "d2"], outs, strict=True):
        assert whole(swarm.sites[d]) == DATA
        assert "evil" in out.excluded and "evil" not in out.pieces_from  # type: ignore[attr-defined]
    assert {peer for peer, _ in reported} == {"evil"}
    assert all("sha256" in why for _, why in reported)


async def test_a_grant_for_another_piece_list_is_refused(make: object) -> None:
    swarm: Swarm = await make(["src", "d1"])  # type: ignore[operator]
    other = pieces.manifest_of(DATA, PIECE * 2).digest()
    (peer,) = swarm.peers("d1", digest=other)
    with pytest.raises(errors.SourceFailed, match="piece list"):
        await peer.have(IMG.id, len(MANIFEST))
    with pytest.raises(errors.SourceFailed, match="piece list"):
        await peer.piece(IMG.id, 0, PIECE)
    assert swarm.sites["src"].service.served_bytes == 0


async def test_a_piece_not_held_is_refused_and_manifest_checks_refuse_bad_lists() -> None:
    with pytest.raises(errors.InvalidImage):
        Manifest(len(DATA), PIECE, MANIFEST.digests[:-1])
    assert pieces.from_bitmap(pieces.bitmap({0, 9, 23}, 24), 24) == {0, 9, 23}
