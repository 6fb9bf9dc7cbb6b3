"""A broker image relay on real mTLS with many in-process site agents, for integration
tests and the replication benchmark.

Each ``Site`` has its own client certificate and channel, an in-memory byte store and an
``ImageServer`` serving that store; ``copy_hop`` moves one hop of a fan-out by pulling
through the relay into the destination's store with full verification. The relay
authorizes every pull from the copy orders in its store (``CatalogAccess``), as in the
broker: ``Federation.order`` writes what the replication controller would (the catalog
record, the source's verified replica, the destination's order naming the source).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc

from broker.gateway import server as gateway_server
from broker.gateway.imageaccess import CatalogAccess
from broker.gateway.imagefeed import ImageOrders
from broker.gateway.relay import Relay
from broker.pki.layout import Layout
from broker.settings import BrokerSettings, GatewaySettings, TlsSettings
from broker.store import keys
from broker.store.memory import MemoryStore
from broker.store.protocol import Store
from replication import catalog, planner, transfer
from replication.catalog import Entry, Replica, State
from replication.store import MemoryBytes
from replication.throttle import Throttle
from siteagent.imagewire import ImageServer, PullSource
from tests.support.etcd import free_ports
from tests.support.gateway import TRUST_DOMAIN, agent_credentials, make_pki

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 8 << 20),
    ("grpc.max_send_message_length", 8 << 20),
]


@dataclasses.dataclass
class Site:
    name: str
    channel: grpc.aio.Channel
    store: MemoryBytes
    server: ImageServer
    task: asyncio.Task[None]

    async def kill(self) -> None:
        """Like SIGKILL for the site's image service: its calls drop mid-stream."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.channel.close(grace=None)


@dataclasses.dataclass
class Federation:
    address: str
    relay: Relay
    sites: dict[str, Site]
    pki_dir: Path
    chunk_size: int
    store: Store

    async def order(self, image: catalog.Image, destination: str, source: str) -> None:
        """Let ``destination`` pull ``image`` from ``source``: the catalog record, the
        source's verified replica and the destination's copy order naming it."""
        await self.store.put(keys.image(image.id), Entry(image).encode())
        held = Replica(image.id, catalog.SiteId(source), State.ACTIVE, sha256=image.sha256)
        ordered = Replica(
            image.id, catalog.SiteId(destination), State.TRANSFERRING, source=source, attempts=1
        )
        await self.store.put(keys.image_replica(image.id, source), catalog.encode_replica(held))
        await self.store.put(
            keys.image_replica(image.id, destination), catalog.encode_replica(ordered)
        )

    async def start_site(
        self,
        name: str,
        store: MemoryBytes | None = None,
        hook: transfer.Channel | None = None,
        serve: transfer.ByteSource | None = None,
        throttle: Throttle | None = None,
    ) -> Site:
        """An agent for ``name``; it serves ``serve`` if given, else its own store."""
        pki = Layout(self.pki_dir)
        channel = grpc.aio.secure_channel(
            self.address, agent_credentials(pki, name), options=CHANNEL_OPTIONS
        )
        store = store if store is not None else MemoryBytes()
        server = ImageServer(
            channel, serve or store, hook=hook or transfer.passthrough, throttle=throttle
        )
        task = asyncio.create_task(server.run())
        await asyncio.wait_for(server.ready.wait(), 10)
        for _ in range(200):  # the relay registers the Serve call as it starts
            if name in self.relay.serving():
                break
            await asyncio.sleep(0.01)
        site = Site(name, channel, store, server, task)
        self.sites[name] = site
        return site

    def copier(
        self, image: catalog.Image
    ) -> Callable[[planner.Hop, Callable[[int, float], Awaitable[None]]], Awaitable[None]]:
        async def copy_hop(
            hop: planner.Hop, progress: Callable[[int, float], Awaitable[None]]
        ) -> None:
            dst = self.sites[hop.destination]
            await self.order(image, hop.destination, hop.source)
            src = PullSource(dst.channel, hop.source)
            await transfer.copy(
                image, src, dst.store, chunk_size=self.chunk_size, progress=progress
            )

        return copy_hop


@contextlib.asynccontextmanager
async def federation(
    tmp: Path,
    sites: list[str],
    *,
    chunk_size: int = 32 * 1024,
    depth: int = 4,
    store: Store | None = None,
    serving: list[str] | None = None,
    orders: ImageOrders | None = None,
) -> AsyncIterator[Federation]:
    pki = make_pki(tmp / "pki", sites, serving or [])
    (port,) = free_ports(1)
    settings = BrokerSettings(
        name="gw-1",
        tls=TlsSettings(
            ca_file=str(pki.ca_cert),
            cert_file=str(pki.broker_cert("gw-1")),
            key_file=str(pki.broker_key("gw-1")),
            trust_domain=TRUST_DOMAIN,
        ),
        gateway=GatewaySettings(listen=f"127.0.0.1:{port}", max_message_bytes=8 << 20),
    )
    store = store if store is not None else MemoryStore()
    relay = Relay(
        TRUST_DOMAIN,
        access=CatalogAccess(store),
        depth=depth,
        start_timeout=5,
        chunk_timeout=5,
        orders=orders,
    )
    server = gateway_server.build(settings, None, relay)
    await server.start()
    fed = Federation(settings.gateway.listen, relay, {}, tmp / "pki", chunk_size, store)
    try:
        yield fed
    finally:
        for site in list(fed.sites.values()):
            await site.kill()
        await server.stop(grace=0.2)
