"""The dev federation's etcd (``meridian dev up``) speaks TLS only and requires a client
certificate from its own CA: what a client without one, with a site agent's certificate
or in plain text gets, and that nothing was written. A broker's settings reach it.
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from broker import errors
from broker.devfed.federation import Federation
from broker.store.etcd import EtcdStore

pytestmark = [pytest.mark.etcd]

KEY = "attack/written"


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    federation = Federation(state=tmp_path / "dev", brokers=1)
    federation.prepare()
    federation.issue_sites(["site-001"])
    federation.start_etcd()
    try:
        yield federation
    finally:
        federation.down()


async def attempt(settings: object) -> str:
    """What a client with ``settings`` gets from a put (the error's text, or "written")."""
    store = EtcdStore.from_settings(settings)  # type: ignore[arg-type]
    try:
        await store.put(KEY, b"x")
    except errors.BrokerError as exc:
        return f"refused: {exc}"
    finally:
        await store.close()
    return "written"


async def test_dev_etcd_refuses_clients_without_a_certificate_of_its_ca(fed: Federation) -> None:
    broker = fed.etcd_settings(client="broker-1")
    no_cert = dataclasses.replace(broker, cert_file="", key_file="")
    site_cert = dataclasses.replace(
        broker, cert_file=str(fed.pki.site_cert("site-001")),
        key_file=str(fed.pki.site_key("site-001")),
    )
    outcomes = {
        "no client certificate": await attempt(no_cert),
        "a site agent's certificate": await attempt(site_cert),
        "plain text": await attempt(dataclasses.replace(broker, ca_file="", cert_file="",
                                                        key_file="")),
    }
    for what, got in outcomes.items():
        assert got.startswith("refused"), (what, got)

    # at the TLS layer: the handshake itself fails without a certificate
    host, _, port = fed.etcd_endpoint.rpartition(":")
    context = ssl.create_default_context(cafile=broker.ca_file)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                if not tls.recv(1):
                    raise ConnectionError("closed without an answer")
    async with httpx.AsyncClient(timeout=2) as plain:
        with pytest.raises(httpx.HTTPError):
            await plain.get(f"http://{fed.etcd_endpoint}/health")
    assert not Federation.etcd_healthy(no_cert)

    # the broker's own settings reach it, and nothing the others tried was written
    assert Federation.etcd_healthy(broker)
    store = EtcdStore.from_settings(broker)
    try:
        assert await store.get(KEY) is None
        await store.put("ok", b"1")
        assert (await store.get("ok")) is not None
    finally:
        await store.close()


def test_the_brokers_settings_name_the_etcd_client_certificate(fed: Federation) -> None:
    from broker import settings

    loaded = settings.load(fed.broker_config("broker-1"), env={})
    assert loaded.etcd.ca_file == str(fed.etcd_pki.ca_cert)
    assert loaded.etcd.cert_file == str(fed.etcd_pki.broker_cert("broker-1"))
    assert Path(loaded.etcd.key_file).stat().st_mode & 0o077 == 0, "the key is 0600"
