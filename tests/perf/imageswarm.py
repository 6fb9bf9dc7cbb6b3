"""The replication benchmark's swarm process: 16 destination sites swarming one image.

``python -m tests.perf.replication --role swarm ...`` runs this (``role_swarm``): sites
``f00``..``f15``, each with its own image directory, its own ``directwire.DirectServer``
(mTLS, the site's certificate) and its own link shaped to the command's ``cap`` bytes/s
each way (a ``Throttle`` on what it serves, one on what it receives, charged per chunk as
it arrives). On ``{"op": "one"}`` site
``s00`` alone pulls the image from the source's shaped direct address (one transfer over
one shaped link: the baseline); on ``{"op": "swarm"}`` all 16 swarm it from the source
and from each other (``siteagent.swarmwire.receive``) under grants this process signs as
the broker would. Each answer says how long it took, how many pieces came from the source
and whether every site's bytes match the catalog.
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

from broker.pki.layout import Layout
from replication import catalog, grant, pieces
from replication.catalog import ImageId
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


class Broker:
    """Signs the grants and opens the channels of one swarm (what the tracker hands out)."""

    def __init__(self, pki: Layout, key: grant.Ed25519PrivateKey, manifest: Manifest) -> None:
        self.pki, self.key, self.manifest = pki, key, manifest
        self.channels: list[grpc.aio.Channel] = []

    def peer(self, me: Site, source: str, address: str, image: ImageId) -> swarmwire.GrantedPeer:
        expires = int((time.time() + 3600) * 1000)
        g = grant.Grant(image, source, me.name, expires, self.manifest.digest())
        creds = agent_credentials(self.pki, me.name)
        channel = grpc.aio.secure_channel(address, creds, options=CHANNEL_OPTIONS)
        self.channels.append(channel)
        tok = grant.sign(g, self.key)
        return swarmwire.GrantedPeer(channel, source, tok, self.manifest, download=me.down)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(grace=None)
        self.channels.clear()


async def receive(
    broker: Broker, img: catalog.Image, me: Site, peers: list[swarmwire.GrantedPeer]
) -> Any:
    return await swarmwire.receive(
        me.store.root, img, broker.manifest, peers, me.swarms, seed=me.name
    )


async def run(
    broker: Broker, img: catalog.Image, sites: list[Site], src: str, everyone: bool, cap: float
) -> dict[str, Any]:
    for site in sites:
        site.clear(cap)
    t = time.perf_counter()
    jobs = []
    for me in sites:
        peers = [broker.peer(me, "src", src, img.id)]
        if everyone:
            peers += [broker.peer(me, o.name, o.address, img.id) for o in sites if o is not me]
        jobs.append(receive(broker, img, me, peers))
    outs = await asyncio.gather(*jobs, return_exceptions=True)
    seconds = time.perf_counter() - t
    await broker.close()
    wrong = {}
    for me, out in zip(sites, outs, strict=True):
        path = me.store.root / f"{img.id}.img"
        if isinstance(out, BaseException):
            wrong[me.name] = repr(out)
        elif hashlib.sha256(path.read_bytes()).hexdigest() != img.sha256:
            wrong[me.name] = "sha256 differs"
    from_src = sum(o.pieces_from.get("src", 0) for o in outs if not isinstance(o, BaseException))
    return {"seconds": seconds, "from_source": from_src, "failed": wrong}


async def lines() -> AsyncIterator[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        yield json.loads(line)


async def role_swarm(pki: Layout, src: str, data: bytes, piece: int) -> None:
    key = grant.load_private((pki.root / "grant.key").read_bytes())
    manifest = pieces.manifest_of(data, piece)
    with tempfile.TemporaryDirectory() as tmp:
        sites = [Site(name, Path(tmp), float("inf")) for name in SITES]
        servers = [await serve(pki, s, key.public_key()) for s in sites]
        print(json.dumps({"event": "ready", "manifest": manifest.digest()}), flush=True)
        broker = Broker(pki, key, manifest)
        async for cmd in lines():
            img = catalog.Image.from_dict(cmd["image"])
            group = sites[:1] if cmd["op"] == "one" else sites
            everyone = cmd["op"] == "swarm"
            out = await run(broker, img, group, src, everyone, float(cmd["cap"]))
            print(json.dumps({"event": cmd["op"], **out}), flush=True)
        for server in servers:
            await server.stop(None)
