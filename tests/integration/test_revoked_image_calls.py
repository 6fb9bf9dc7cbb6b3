"""A certificate revocation ends the image calls already open, on real mTLS and etcd.

Image calls are authorized when they start; before this, a revocation written to
``pki/revoked/`` closed the agent's main stream but left its ``Serve`` (and any ``Pull``
under way) open. Here the replica's real ``Revocations`` feed follows etcd, the relay's
``close_serial`` is wired as in ``broker.running``, and raw calls made with real
certificates are ended UNAVAILABLE with the reason, "certificate <serial> was revoked".
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from meridian.v1 import image_pb2 as ipb
from meridian.v1 import image_pb2_grpc as ipb_grpc

from broker.gateway.feeds import Revocations
from broker.gateway.sessions import Registry
from broker.pki.layout import Layout
from broker.store import keys
from broker.store.etcd import EtcdStore
from replication import catalog
from replication.catalog import ImageId, SiteId
from tests.support import imagerelay
from tests.support.gateway import agent_credentials

pytestmark = [pytest.mark.grpc, pytest.mark.etcd]

SITES = ["site-001", "site-002"]


def serial_of(pki: Layout, site: str) -> int:
    return x509.load_pem_x509_certificate(pki.site_cert(site).read_bytes()).serial_number


async def test_a_revocation_ends_the_open_serve_and_pull(
    tmp_path: Path, etcd_store: EtcdStore
) -> None:
    async with imagerelay.federation(tmp_path, SITES, store=etcd_store) as fed:
        revocations = Revocations(etcd_store, Registry())
        revocations.also.append(fed.relay.close_serial)
        follower = asyncio.create_task(revocations.run())
        pki = Layout(fed.pki_dir)
        channels = {
            site: grpc.aio.secure_channel(
                fed.address, agent_credentials(pki, site), options=imagerelay.CHANNEL_OPTIONS
            )
            for site in SITES
        }
        try:
            await asyncio.wait_for(revocations.ready.wait(), 10)
            image = catalog.Image(
                id=ImageId("img-a"), name="a", size=10, sha256="0" * 64,
                source_site=SiteId("site-001"),
            )
            await fed.order(image, "site-002", "site-001")
            serve = ipb_grpc.ImageTransferStub(channels["site-001"]).Serve(ipb.ServeOpen())
            await asyncio.wait_for(serve.initial_metadata(), 10)
            pull = ipb_grpc.ImageTransferStub(channels["site-002"]).Pull(
                ipb.PullRequest(image_id="img-a", source_site="site-001", chunk_size=1024)
            )
            asked = await asyncio.wait_for(serve.read(), 10)  # the pull reached the source
            assert isinstance(asked, ipb.ServeRequest) and asked.image_id == "img-a"

            for site in ("site-002", "site-001"):  # the destination first, then the source
                call = pull if site == "site-002" else serve
                started = time.monotonic()
                await etcd_store.put(keys.revoked(serial_of(pki, site)), b"revoked")
                code = await asyncio.wait_for(call.code(), 4)  # well before any timeout
                took = time.monotonic() - started
                print(f"\n{site}: {code.name} {took * 1000:.0f} ms after the revocation")
                assert code == grpc.StatusCode.UNAVAILABLE
                assert f"certificate {serial_of(pki, site):x} was revoked" in (
                    await call.details() or ""
                )
            assert "site-001" not in fed.relay.serving()
            assert fed.relay.close_serial(serial_of(pki, "site-001"), "again") == 0
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            for channel in channels.values():
                await channel.close(grace=None)
