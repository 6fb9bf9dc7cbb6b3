"""An in-process broker gateway on real mTLS, over a real store, for integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from meridian.v1 import agent_pb2 as pb
from meridian.v1 import agent_pb2_grpc as pb_grpc

from broker.gateway import server as gateway_server
from broker.gateway.feeds import DesiredFeed, RegisteredSites, ReplicaLease, Revocations
from broker.gateway.servicer import Gateway
from broker.gateway.sessions import Registry
from broker.models import codec
from broker.models.site import SiteSpec
from broker.pki import authority
from broker.pki.layout import Layout
from broker.settings import BrokerSettings, GatewaySettings, HealthSettings, TlsSettings
from broker.store import keys
from broker.store.protocol import Store
from siteagent.settings import TlsSettings as AgentTls
from tests.support.etcd import free_ports

TRUST_DOMAIN = "meridian.test"


def agent_tls(pki: Layout, site: str) -> AgentTls:
    """The TLS settings of ``site``'s agent, from the test PKI."""
    return AgentTls(
        ca_file=str(pki.ca_cert),
        cert_file=str(pki.site_cert(site)),
        key_file=str(pki.site_key(site)),
    )


def gateway_on(store: Store, settings: BrokerSettings | None = None) -> Gateway:
    """A gateway servicer over ``store``, not serving (its feeds not started: until
    ``sites`` and ``desired`` have listed, openings read etcd, as on a replica starting)."""
    registry = Registry()
    lease, revocations = ReplicaLease(store, ttl=3), Revocations(store, registry)
    return Gateway(
        store,
        settings or BrokerSettings(),
        registry,
        lease,
        revocations,
        sites=RegisteredSites(store),
        desired=DesiredFeed(store, registry),
    )


def make_pki(directory: Path, sites: list[str], serving: Sequence[str] = ()) -> Layout:
    """A CA, broker ``gw-1`` and ``sites``; those in ``serving`` may also serve (direct
    image transfers on 127.0.0.1)."""
    ca = authority.create(directory, TRUST_DOMAIN)
    ca.issue_broker("gw-1")
    for site in sites:
        ca.issue_site(site, serves=[] if site in serving else None)
    return Layout(directory)


def agent_credentials(pki: Layout, site: str | None) -> grpc.ChannelCredentials:
    """Client credentials for ``site`` (or none: a client without a certificate)."""
    ca = pki.ca_cert.read_bytes()
    if site is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    return grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=pki.site_key(site).read_bytes(),
        certificate_chain=pki.site_cert(site).read_bytes(),
    )


def site_server_credentials(pki: Layout, site: str) -> grpc.ServerCredentials:
    """A site's direct image server (its serving certificate; client certificates required)."""
    return grpc.ssl_server_credentials(
        [(pki.site_key(site).read_bytes(), pki.site_cert(site).read_bytes())],
        root_certificates=pki.ca_cert.read_bytes(),
        require_client_auth=True,
    )


async def register(store: Store, *sites: str) -> None:
    for site in sites:
        await store.put(keys.site(site), codec.encode(SiteSpec(id=site, region="r1")))


@dataclasses.dataclass
class RunningGateway:
    address: str
    store: Store
    registry: Registry
    gateway: Gateway
    settings: BrokerSettings
    pki: Layout
    lease: ReplicaLease


@contextlib.asynccontextmanager
async def running_gateway(
    store: Store,
    pki: Layout,
    *,
    name: str = "gw-1",
    max_message_bytes: int = 64 * 1024,
    health: HealthSettings | None = None,
    **overrides: Any,
) -> AsyncIterator[RunningGateway]:
    """A gateway replica; ``overrides`` replace fields of its ``GatewaySettings``."""
    (port,) = free_ports(1)
    settings = BrokerSettings(
        name=name,
        tls=TlsSettings(
            ca_file=str(pki.ca_cert),
            cert_file=str(pki.broker_cert(name)),
            key_file=str(pki.broker_key(name)),
            trust_domain=TRUST_DOMAIN,
        ),
        gateway=GatewaySettings(
            listen=f"127.0.0.1:{port}",
            heartbeat_interval=0.2,
            max_message_bytes=max_message_bytes,
            **{"hello_timeout": 2.0, **overrides},
        ),
        health=health or HealthSettings(),
    )
    gateway = gateway_on(store, settings)
    registry, lease, revocations = gateway.registry, gateway.lease, gateway.revocations
    desired, sites = gateway.desired, gateway.sites
    assert desired is not None and sites is not None
    server = gateway_server.build(settings, gateway)
    await server.start()
    tasks = [
        asyncio.create_task(lease.run()),
        asyncio.create_task(revocations.run()),
        asyncio.create_task(desired.run()),
        asyncio.create_task(sites.run()),
        asyncio.create_task(gateway.liveness.run()),
    ]
    await asyncio.wait_for(revocations.ready.wait(), 10)
    try:
        yield RunningGateway(
            settings.gateway.listen, store, registry, gateway, settings, pki, lease
        )
    finally:
        await server.stop(grace=0.5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await lease.revoke()


def hello(site: str, major: int = 1, minor: int = 1, **observed: int) -> pb.AgentMessage:
    return pb.AgentMessage(
        hello=pb.Hello(
            site_id=site,
            version=pb.ProtocolVersion(major=major, minor=minor),
            agent_version="test",
            inventory=pb.Inventory(
                hosts=[pb.Host(name="h1", cells=[pb.NumaCell(id=0, cpus_total=8)])]
            ),
            observed={k.replace("__", "/"): v for k, v in observed.items()},
        )
    )


@contextlib.asynccontextmanager
async def raw_stream(
    address: str, creds: grpc.ChannelCredentials
) -> AsyncIterator[grpc.aio.StreamStreamCall[pb.AgentMessage, pb.BrokerMessage]]:
    async with grpc.aio.secure_channel(address, creds) as channel:
        yield pb_grpc.AgentGatewayStub(channel).Connect()
