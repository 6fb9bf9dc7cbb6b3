"""An agent survives a broker that ends its stream cleanly, on real mTLS.

A replica that goes away ends the stream, maybe while the agent is about to write (its
Hello, a heartbeat); grpc then raises ``InvalidStateError`` from the write. The session must treat
that as a lost stream and dial again — never end the agent process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from meridian.v1 import agent_pb2 as pb
from meridian.v1 import agent_pb2_grpc as pb_grpc

from siteagent.drivers.sim import SimSite
from siteagent.reconciler import Reconciler
from siteagent.session import Session
from siteagent.settings import AgentSettings, SessionSettings
from tests.support import gateway as gw

pytestmark = [pytest.mark.grpc]


class Hangup(pb_grpc.AgentGatewayServicer):
    """Ends every stream at once, before the agent has written anything."""

    def __init__(self) -> None:
        self.opened = 0

    async def Connect(
        self, request_iterator: AsyncIterator[pb.AgentMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.BrokerMessage]:
        self.opened += 1
        return
        yield  # an (empty) stream of replies


async def test_a_stream_ended_under_a_write_is_lost_not_fatal(tmp_path: Path) -> None:
    pki = gw.make_pki(tmp_path / "pki", ["site-a"])
    server = grpc.aio.server()
    servicer = Hangup()
    pb_grpc.add_AgentGatewayServicer_to_server(servicer, server)
    creds = grpc.ssl_server_credentials(
        [(pki.broker_key("gw-1").read_bytes(), pki.broker_cert("gw-1").read_bytes())],
        root_certificates=pki.ca_cert.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    settings = AgentSettings(
        site_id="site-a",
        tls=gw.agent_tls(pki, "site-a"),
        session=SessionSettings(
            brokers=(f"127.0.0.1:{port}",), backoff_initial=0.05, backoff_max=0.1
        ),
    )
    driver = SimSite.generated("site-a", hosts=1, cells=1, seed=1)

    async def slow_inventory() -> pb.Inventory:
        await asyncio.sleep(0.3)  # the broker has hung up by the time Hello is written
        return pb.Inventory()

    session = Session(settings, driver, Reconciler(driver), inventory_hook=slow_inventory)
    task = asyncio.create_task(session.run())
    try:
        for _ in range(300):
            if servicer.opened >= 4 or task.done():
                break
            await asyncio.sleep(0.05)
        if task.done():
            task.result()  # re-raises what ended the agent's session
        assert servicer.opened >= 4, f"the agent dialled {servicer.opened} times"
        assert session.stats.connects >= 4 and session.stats.welcomed == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop(None)
