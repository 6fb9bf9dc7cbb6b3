"""A live agent stream closed by a certificate revocation, on real mTLS and real etcd.

The agent is the real ``siteagent.session.Session``, writing heartbeats. Before the fix,
a heartbeat racing the broker's close turned the agent's side of the call into INTERNAL
"Internal error from Core" (grpc overwrites the call's status when a write fails), so
the agent never learned why. Now the broker says why in the stream first (a ``Refusal``,
``REFUSAL_IDENTITY``, "certificate ... was revoked"), waits for the agent to end the call,
and acts on nothing the revoked identity sends meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from cryptography import x509

from broker.store import keys
from broker.store.etcd import EtcdStore
from siteagent import errors
from siteagent.drivers.sim import SimSite
from siteagent.reconciler import Reconciler
from siteagent.session import Session
from siteagent.settings import AgentSettings, SessionSettings
from tests.support import gateway as gw

pytestmark = [pytest.mark.grpc, pytest.mark.etcd]


async def site_keys(store: EtcdStore) -> dict[str, int]:
    found: dict[str, int] = {}
    for prefix in (keys.USAGE, keys.OBSERVED, keys.INVENTORY):
        items, _ = await store.get_prefix(prefix)
        found |= {kv.key: kv.mod_revision for kv in items}
    return found


@pytest.mark.parametrize("attempt", range(3))
async def test_a_revoked_stream_tells_the_agent_why(
    tmp_path: Path, etcd_store: EtcdStore, caplog: pytest.LogCaptureFixture, attempt: int
) -> None:
    pki = gw.make_pki(tmp_path / "pki", ["site-a"])
    await gw.register(etcd_store, "site-a")
    serial = x509.load_pem_x509_certificate(pki.site_cert("site-a").read_bytes()).serial_number
    caplog.set_level(logging.INFO, logger="siteagent.session")
    async with gw.running_gateway(etcd_store, pki) as running:
        settings = AgentSettings(
            site_id="site-a",
            tls=gw.agent_tls(pki, "site-a"),
            session=SessionSettings(brokers=(running.address,), backoff_initial=0.05,
                                    backoff_max=0.1),
        )
        driver = SimSite.generated("site-a", hosts=1, cells=1, seed=1)
        session = Session(settings, driver, Reconciler(driver))
        task = asyncio.create_task(session.run())
        try:
            await asyncio.wait_for(session.stats.connected.wait(), 10)
            await asyncio.sleep(0.3 + 0.07 * attempt)  # heartbeats flowing both ways
            before = await site_keys(etcd_store)
            await etcd_store.put(keys.revoked(serial), b'{"reason":"test"}')
            with pytest.raises(errors.Refused) as refused:
                await asyncio.wait_for(task, 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert session.stats.connects == 1, "told on the live stream, not on a reconnect"
        assert refused.value.code == "REFUSAL_IDENTITY" and refused.value.permanent
        assert f"certificate {serial:x} was revoked" in str(refused.value)
        assert not [r for r in caplog.records if "INTERNAL" in r.getMessage()]
        assert await site_keys(etcd_store) == before, "nothing written after the revocation"
        assert running.registry.get("site-a") is None
