"""The replication benchmark's swarm process: 16 destination sites swarming one image.

``python -m tests.perf.replication --role swarm ...`` runs this (``role_swarm``): sites
``f00``..``f15``, each with its own image directory, its own ``directwire.DirectServer``
(mTLS, the site's certificate) and its own link shaped to the command's ``cap`` bytes/s
each way (a ``Throttle`` on what it serves, one on what it receives, charged per chunk
as it arrives). On ``{"op": "one"}`` site ``s00`` alone pulls the image from the
source's shaped direct address (one transfer over one shaped link: the baseline); on
``{"op": "swarm"}`` all 16 swarm it from the source and from each other
(``siteagent.swarmwire.receive``), each from the peers its copy order names under the
grants the broker's ``ImageOrders`` signed (``Tracker``: the broker's order and tracker
code, in this process, on an in-memory store). Each answer says how long it took, how
many pieces came from the source and whether every site's bytes match the catalog.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from meridian.v1 import image_pb2 as ipb

from broker.gateway.imagefeed import ImageOrders, grant_signer
from broker.models import objects
from broker.pki.layout import Layout
from broker.store import keys
from broker.store.memory import MemoryStore
from replication import catalog, grant, pieces
from replication.catalog import ImageId, Replica, SiteId, State
from replication.pieces import Manifest, PieceFile
from replication.throttle import Throttle
from siteagent import directwire, swarmwire
from siteagent.directwire import CHANNEL_OPTIONS
from siteagent.imagewire import SiteDir
from tests.support.etcd import free_ports
from tests.support.gateway import agent_credentials, site_server_credentials

SITES = [f"s{i:02d}" for i in range(16)]


class Site:
    def __init__(self, name: str, root: Path, cap: float) -> None:
        self.name = name
        self.store = SiteDir(root / name)
        self.swarms: dict[ImageId, PieceFile] = {}
        self.down = Throttle(cap, burst=1 << 20)
        self.up = Throttle(cap, burst=1 << 20)
        self.address = ""

    def clear(self, cap: float) -> None:
        """An empty image directory; the link shaped to ``cap`` bytes/s each way."""
        shutil.rmtree(self.store.root)
        self.store.root.mkdir()
        for bucket in (self.down, self.up):
            bucket.rate = cap


async def serve(pki: Layout, site: Site, key: grant.Ed25519PublicKey) -> grpc.aio.Server:
    service = directwire.DirectServer(
        site.name, site.store, key, throttle=site.up, swarms=site.swarms
    )
    creds = site_server_credentials(pki, site.name)
    (port,) = free_ports(1)
    server, _ = directwire.server(service, f"127.0.0.1:{port}", creds)
    await server.start()
    site.address = f"127.0.0.1:{port}"
    return server


class Tracker:
    """The broker's side of one swarm, run in this process: its ``ImageOrders`` (the grant
    key loaded by ``grant_signer``, as ``images.grant_key_file`` names it) on an in-memory
    store, fed what the leader's replication controller and the agents' audits would give
    it; each site's copy order names its peers, each with a grant the broker signed
    (``replication.tracker``), as the site's agent would receive it."""

    def __init__(self, pki: Layout, manifest: Manifest) -> None:
        self.pki, self.manifest = pki, manifest
        self.channels: list[grpc.aio.Channel] = []

    async def orders(
        self, img: catalog.Image, sites: list[Site], src: str
    ) -> dict[str, ipb.CopyOrder]:
        # imported here: the controllers weigh ~25 MiB, which the benchmark's broker
        # process (it imports this module) must not carry in its peak RSS
        from broker.controllers.images import piece_list

        store = MemoryStore()
        orders = ImageOrders(store, signer=grant_signer(str(self.pki.root / "grant.key")))
        follower = asyncio.create_task(orders.run())
        try:
            for name, address in [("src", src), *((s.name, s.address) for s in sites)]:
                await orders.report(name, ipb.ImageReport(audit=True, direct_address=address))
            entry = catalog.Entry(img)
            listed = json.dumps(self.manifest.to_dict())
            recorded = piece_list(entry, objects.PieceReport(img.sha256, listed))
            assert recorded is not None, "the piece list is not the catalog's image"
            await store.put(keys.image_pieces(img.id), recorded)
            await store.put(keys.image(img.id), entry.encode())
            held = Replica(img.id, SiteId("src"), State.ACTIVE, sha256=img.sha256)
            await store.put(keys.image_replica(img.id, "src"), catalog.encode_replica(held))
            queued = {s.name: Replica(img.id, SiteId(s.name), State.QUEUED) for s in sites}
            for name, r in queued.items():  # every destination queued, then started
                await store.put(keys.image_replica(img.id, name), catalog.encode_replica(r))
            for name, r in queued.items():
                started = catalog.encode_replica(r.start("src", swarm=True))
                await store.put(keys.image_replica(img.id, name), started)
            for _ in range(3000):  # the sites' calls open once the broker has read it all
                seen = orders._replicas
                started = sum(r.state is State.TRANSFERRING for r in seen.values())
                if len(seen) == len(sites) + 1 and started == len(sites) and orders._pieces:
                    break
                await asyncio.sleep(0.01)
            boxes = {s.name: orders.attach(s.name) for s in sites}
            return {name: await asyncio.wait_for(box.get(), 30) for name, box in boxes.items()}
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)

    def peers(self, me: Site, order: ipb.CopyOrder) -> list[swarmwire.GrantedPeer]:
        """The order's peers as the agent dials them (``ImageAgent._swarm``)."""
        manifest = pieces.Manifest.from_dict(json.loads(order.pieces))
        creds = agent_credentials(self.pki, me.name)
        out = []
        for p in order.peers:
            name = ("grpc.ssl_target_name_override", grant.server_name(p.site))
            channel = grpc.aio.secure_channel(p.address, creds, options=[*CHANNEL_OPTIONS, name])
            self.channels.append(channel)
            out.append(swarmwire.GrantedPeer(channel, p.site, p.grant, manifest, download=me.down))
        return out

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(grace=None)
        self.channels.clear()


async def receive(
    tracker: Tracker, img: catalog.Image, me: Site, peers: list[swarmwire.GrantedPeer]
) -> Any:
    return await swarmwire.receive(
        me.store.root, img, tracker.manifest, peers, me.swarms, seed=me.name
    )


async def run(
    tracker: Tracker, img: catalog.Image, sites: list[Site], src: str, cap: float
) -> dict[str, Any]:
    for site in sites:
        site.clear(cap)
    orders = await tracker.orders(img, sites, src)
    t = time.perf_counter()
    jobs = [receive(tracker, img, me, tracker.peers(me, orders[me.name])) for me in sites]
    outs = await asyncio.gather(*jobs, return_exceptions=True)
    seconds = time.perf_counter() - t
    await tracker.close()
    wrong = {}
    for me, out in zip(sites, outs, strict=True):
        path = me.store.root / f"{img.id}.img"
        if isinstance(out, BaseException):
            wrong[me.name] = repr(out)
        elif hashlib.sha256(path.read_bytes()).hexdigest() != img.sha256:
            wrong[me.name] = "sha256 differs"
    from_src = sum(o.pieces_from.get("src", 0) for o in outs if not isinstance(o, BaseException))
    peers = max(len(o.peers) for o in orders.values())
    return {"seconds": seconds, "from_source": from_src, "failed": wrong, "peers": peers}


async def lines() -> AsyncIterator[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        yield json.loads(line)


async def role_swarm(pki: Layout, src: str, data: bytes, piece: int) -> None:
    key = grant.load_public((pki.root / "grant.pub").read_bytes())
    manifest = pieces.manifest_of(data, piece)
    with tempfile.TemporaryDirectory() as tmp:
        sites = [Site(name, Path(tmp), float("inf")) for name in SITES]
        servers = [await serve(pki, s, key) for s in sites]
        print(json.dumps({"event": "ready", "manifest": manifest.digest()}), flush=True)
        tracker = Tracker(pki, manifest)
        async for cmd in lines():
            img = catalog.Image.from_dict(cmd["image"])
            group = sites[:1] if cmd["op"] == "one" else sites
            out = await run(tracker, img, group, src, float(cmd["cap"]))
            print(json.dumps({"event": cmd["op"], **out}), flush=True)
        for server in servers:
            await server.stop(None)
