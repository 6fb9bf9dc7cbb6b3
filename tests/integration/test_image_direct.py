"""Direct site-to-site image transfers on real mTLS with the federation's certificates.

site-001 accepts inbound connections and serves its verified images with a
``directwire.DirectServer``; the broker's Ed25519 key signs transfer grants. A grant for
site-002 to copy ``img-vnf`` from site-001 gets the image, verified chunk by chunk and
whole; presented by another site, after its expiry, for another image, signed by another
key or edited after signing, it is refused before the store reads a byte. An
``ImageAgent`` whose order names the source's address copies directly (the broker relay
carries nothing); one whose order names none — the source is behind NAT — or an address
that does not answer copies through the relay.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from meridian.v1 import image_pb2 as ipb

from broker.pki.layout import Layout
from replication import catalog, errors, grant, transfer
from replication.catalog import ImageId, SiteId
from replication.store import MemoryBytes
from replication.transfer import Chunk
from siteagent import directwire
from siteagent.imagewire import CHANNEL_OPTIONS, DirectSource, ImageAgent, SiteDir
from tests.support import imagerelay
from tests.support.etcd import free_ports
from tests.support.gateway import agent_credentials, site_server_credentials

pytestmark = [pytest.mark.grpc]

DATA = os.urandom(2 * 1024 * 1024 + 5)
SECRET = os.urandom(100_000)
SITES = ["site-001", "site-002", "site-003"]
KEY = grant.Ed25519PrivateKey.generate()


class Counting(SiteDir):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    async def chunks(
        self, image: ImageId, offset: int, chunk_size: int, *, digests: bool = True
    ) -> AsyncIterator[Chunk]:
        self.reads.append(image)
        async for c in super().chunks(image, offset, chunk_size, digests=digests):
            yield c


def image() -> catalog.Image:
    sha = hashlib.sha256(DATA).hexdigest()
    return catalog.Image(ImageId("img-vnf"), "vnf-base", len(DATA), sha, SiteId("site-001"))


def token(
    *,
    img: str = "img-vnf",
    source: str = "site-001",
    destination: str = "site-002",
    ttl: float = 60.0,
    key: grant.Ed25519PrivateKey = KEY,
) -> str:
    expires = int((time.time() + ttl) * 1000)
    return grant.sign(grant.Grant(img, source, destination, expires), key)


async def direct_server(
    pki: Layout, store: directwire.Holding, certificate: str = "site-001"
) -> tuple[grpc.aio.Server, directwire.DirectServer, str]:
    """site-001's direct server, presenting ``certificate``'s site certificate."""
    service = directwire.DirectServer("site-001", store, KEY.public_key())
    creds = site_server_credentials(pki, certificate)
    (port,) = free_ports(1)
    server, _ = directwire.server(service, f"127.0.0.1:{port}", creds)
    await server.start()
    return server, service, f"127.0.0.1:{port}"


@pytest.fixture
async def fed(
    tmp_path: Path,
) -> AsyncIterator[tuple[imagerelay.Federation, Counting, directwire.DirectServer, str]]:
    source = Counting(tmp_path / "site-001")
    (source.root / "img-vnf.img").write_bytes(DATA)
    (source.root / "unregistered.img").write_bytes(SECRET)
    async with imagerelay.federation(tmp_path, SITES, serving=["site-001"]) as federation:
        await federation.start_site("site-001", serve=source)
        for site in SITES[1:]:
            await federation.start_site(site)
        server, service, address = await direct_server(Layout(federation.pki_dir), source)
        try:
            yield federation, source, service, address
        finally:
            await server.stop(grace=None)


async def copy_direct(
    federation: imagerelay.Federation, caller: str, address: str, tok: str, img: catalog.Image
) -> MemoryBytes:
    sink = MemoryBytes()
    creds = agent_credentials(Layout(federation.pki_dir), caller)
    async with grpc.aio.secure_channel(address, creds, options=CHANNEL_OPTIONS) as channel:
        await transfer.copy(img, DirectSource(channel, "site-001", tok), sink, chunk_size=65536)
    return sink


async def test_a_granted_copy_goes_site_to_site_and_nothing_else_is_served(
    fed: tuple[imagerelay.Federation, Counting, directwire.DirectServer, str],
) -> None:
    federation, source, service, address = fed
    img = image()
    secret = catalog.Image(
        id=ImageId("unregistered"),
        name="x",
        size=len(SECRET),
        sha256=hashlib.sha256(SECRET).hexdigest(),
        source_site=SiteId("site-001"),
    )
    bad = {
        "another site's grant": ("site-003", token(), img),
        "expired": ("site-002", token(ttl=-1), img),
        "grant for another image": ("site-002", token(), secret),
        "forged signature": ("site-002", token(key=grant.Ed25519PrivateKey.generate()), img),
        "edited after signing": ("site-002", edited(token(destination="site-003")), img),
        "no grant": ("site-002", "", img),
        "grant naming another source": ("site-002", token(source="site-003"), img),
    }
    for what, (caller, tok, target) in bad.items():
        with pytest.raises(errors.SourceFailed) as refused:
            await copy_direct(federation, caller, address, tok, target)
        assert "grant" in str(refused.value), (what, refused.value)
    assert source.reads == [], "the source was never asked for a byte"
    assert len(service.refused) == len(bad)

    sink = await copy_direct(federation, "site-002", address, token(), img)
    assert sink.get(img.id) == DATA
    assert federation.relay.carried_bytes == 0, "the relay carried nothing"


async def test_a_direct_pull_carries_prefix_digests_from_wherever_it_resumes(
    fed: tuple[imagerelay.Federation, Counting, directwire.DirectServer, str],
) -> None:
    """Each chunk's sha256 is of the image up to its end, from byte 0 or from inside a
    chunk (a resumed copy): the destination checks it in the pass that computes the
    whole-image sha256."""
    federation, _, _, address = fed
    creds = agent_credentials(Layout(federation.pki_dir), "site-002")
    async with grpc.aio.secure_channel(address, creds, options=CHANNEL_OPTIONS) as channel:
        source = DirectSource(channel, "site-001", token())
        for start in (0, 70_000):
            got = [c async for c in source.chunks(ImageId("img-vnf"), start, 65536)]
            assert got[0].offset == start and b"".join(c.data for c in got) == DATA[start:]
            for c in got:
                assert (
                    c.prefix and c.sha256 == hashlib.sha256(DATA[: c.offset + len(c.data)]).digest()
                )


def edited(tok: str) -> str:
    """The same signature over a payload naming site-002 instead of site-003."""
    body, sig = tok.split(".")
    payload = grant._unb64(body).replace(b"site-003", b"site-002")
    return f"{grant._b64(payload)}.{sig}"


async def test_a_copy_still_arriving_is_not_served_directly(tmp_path: Path) -> None:
    async with imagerelay.federation(tmp_path, SITES, serving=["site-001"]) as federation:
        partial = SiteDir(tmp_path / "partial")
        await partial.reserve(ImageId("img-vnf"), len(DATA))
        await partial.write(ImageId("img-vnf"), Chunk.of(0, DATA[:1000]))
        server, _, address = await direct_server(Layout(federation.pki_dir), partial)
        try:
            with pytest.raises(errors.SourceFailed, match="no verified copy"):
                await copy_direct(federation, "site-002", address, token(), image())
        finally:
            await server.stop(grace=None)


def order(address: str, tok: str) -> ipb.CopyOrder:
    img = image()
    return ipb.CopyOrder(
        image_id=img.id,
        name=img.name,
        size=img.size,
        sha256=img.sha256,
        source_site="site-001",
        attempt=1,
        chunk_size=65536,
        source_address=address,
        grant=tok,
    )


async def agent_copy(
    federation: imagerelay.Federation, tmp_path: Path, o: ipb.CopyOrder
) -> list[ipb.ReplicaReport]:
    """site-002's ``ImageAgent`` carrying out one order; its reports, to ``active``."""
    pki = Layout(federation.pki_dir)
    await federation.order(image(), "site-002", "site-001")  # the relay's authorization
    channel = federation.sites["site-002"].channel
    agent = ImageAgent(
        [channel], SiteDir(tmp_path / "site-002"), credentials=agent_credentials(pki, "site-002")
    )
    outbox: asyncio.Queue[ipb.ImageReport] = asyncio.Queue()
    agent._live.append(outbox)
    await agent._copy(o, channel, outbox)
    reports = [r for _ in range(outbox.qsize()) for r in outbox.get_nowait().replicas]
    assert reports[-1].state == "active", reports[-1]
    assert (tmp_path / "site-002" / "img-vnf.img").read_bytes() == DATA
    return reports


async def test_the_agent_copies_directly_when_the_order_names_an_address(
    fed: tuple[imagerelay.Federation, Counting, directwire.DirectServer, str], tmp_path: Path
) -> None:
    federation, _, service, address = fed
    reports = await agent_copy(federation, tmp_path, order(address, token()))
    assert {r.path for r in reports} == {"direct"}
    assert service.served_bytes == len(DATA)
    assert federation.relay.carried_bytes == 0


async def test_a_source_behind_nat_or_unreachable_falls_back_to_the_relay(
    fed: tuple[imagerelay.Federation, Counting, directwire.DirectServer, str], tmp_path: Path
) -> None:
    federation, _, service, _ = fed
    reports = await agent_copy(federation, tmp_path / "nat", order("", ""))
    assert {r.path for r in reports} == {"relay"}
    (dead,) = free_ports(1)
    reports = await agent_copy(federation, tmp_path / "dead", order(f"127.0.0.1:{dead}", token()))
    assert reports[-1].path == "relay"
    assert service.served_bytes == 0
    # both copies, every byte (how many were queued at once is timing: not asserted)
    assert federation.relay.carried_bytes >= 2 * len(DATA), "the relay carried the bytes"


def test_serving_directly_needs_the_grant_key_and_a_certificate(tmp_path: Path) -> None:
    from siteagent.errors import SettingsError
    from siteagent.settings import AgentSettings, ImageSettings

    settings = AgentSettings(site_id="site-001", images=ImageSettings(dir=str(tmp_path)))
    assert directwire.from_settings(settings, SiteDir(tmp_path), None) is None  # behind NAT
    listening = AgentSettings(
        site_id="site-001",
        images=ImageSettings(dir=str(tmp_path), direct_listen="127.0.0.1:0"),
    )
    with pytest.raises(SettingsError, match="direct_listen"):
        directwire.from_settings(listening, SiteDir(tmp_path), None)


async def test_the_broker_orders_a_direct_copy_and_show_says_so(tmp_path: Path) -> None:
    """End to end through the broker: site-001's agent reports its address in its audit,
    the broker orders site-002's copy with it and a grant, site-002 copies site to site
    and reports the path; the relay carries nothing."""
    from broker.gateway.imagefeed import ImageOrders
    from broker.models import objects
    from broker.store import keys
    from broker.store.memory import MemoryStore

    store = MemoryStore()
    orders = ImageOrders(store, signer=KEY, chunk_size=65536)
    follower = asyncio.create_task(orders.run())
    source = SiteDir(tmp_path / "site-001")
    (source.root / "img-vnf.img").write_bytes(DATA)
    async with imagerelay.federation(
        tmp_path, SITES, serving=["site-001"], store=store, orders=orders
    ) as federation:
        pki = Layout(federation.pki_dir)
        server, service, address = await direct_server(pki, source)
        agents = []
        for site, store_, addr in (
            ("site-001", source, address),
            ("site-002", SiteDir(tmp_path / "site-002"), ""),
        ):
            channel = grpc.aio.secure_channel(
                federation.address, agent_credentials(pki, site), options=CHANNEL_OPTIONS
            )
            agent = ImageAgent(
                [channel], store_, credentials=agent_credentials(pki, site), direct_address=addr
            )
            agents.append((asyncio.create_task(agent.run()), channel))
        try:
            for _ in range(500):  # site-001's first audit names its address
                if orders._direct.get("site-001") == address:
                    break
                await asyncio.sleep(0.01)
            await federation.order(image(), "site-002", "site-001")
            report = None
            for _ in range(1000):
                kv = await store.get(keys.image_copy("site-002", "img-vnf"))
                report = objects.IMAGE_COPY.decode(kv.value) if kv is not None else None
                if report is not None and report.state == "active":
                    break
                await asyncio.sleep(0.01)
            assert report is not None and (report.state, report.path) == ("active", "direct")
            assert (tmp_path / "site-002" / "img-vnf.img").read_bytes() == DATA
            assert service.served_bytes == len(DATA)
            assert federation.relay.carried_bytes == 0
        finally:
            for task, channel in agents:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await channel.close(grace=None)
            await server.stop(grace=None)
            follower.cancel()


async def test_an_address_answered_by_another_sites_certificate_is_not_pulled_from(
    tmp_path: Path,
) -> None:
    """The destination checks whom it dialed: a server at the order's address holding
    site-003's (valid, serving) certificate is not site-001, whatever it claims — the copy
    goes through the relay and the impostor serves nothing."""
    async with imagerelay.federation(
        tmp_path, SITES, serving=["site-001", "site-003"]
    ) as federation:
        source = SiteDir(tmp_path / "site-001")
        (source.root / "img-vnf.img").write_bytes(DATA)
        await federation.start_site("site-001", serve=source)
        for site in SITES[1:]:
            await federation.start_site(site)
        pki = Layout(federation.pki_dir)
        server, impostor, address = await direct_server(pki, source, certificate="site-003")
        try:
            reports = await agent_copy(federation, tmp_path, order(address, token()))
        finally:
            await server.stop(grace=None)
        assert reports[-1].path == "relay"
        assert impostor.served_bytes == 0
