"""The issued certificates work in a real mutual-TLS handshake (OpenSSL, in memory).

No sockets: the client and server TLS objects talk through memory BIOs. This checks that
what ``authority`` issues is what a TLS stack accepts — and that an expired certificate
and one from a foreign CA are refused by TLS itself, before the gateway reads an identity.
"""

from __future__ import annotations

import datetime
import ssl

import pytest

from broker.pki import authority, identity

TRUST_DOMAIN = "meridian.test"  # the conftest CA's


def contexts(
    ca: authority.Authority, broker: authority.Issued, site: authority.Issued
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(broker.cert_path, broker.key_path)
    server.load_verify_locations(ca.paths.ca_cert)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_cert_chain(site.cert_path, site.key_path)
    client.load_verify_locations(ca.paths.ca_cert)
    return server, client


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, host: str) -> bytes:
    """Run the handshake to the end; return the client certificate the server saw (DER)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=host)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server checks the client's certificate after the client is done
            client.write(b"ping")
            s_in.write(c_out.read())
            assert server.read(4) == b"ping"
            peer = server.getpeercert(binary_form=True)
            assert peer is not None
            return peer
    raise AssertionError("handshake did not finish")


def test_a_site_and_a_broker_of_one_ca_complete_mutual_tls(ca: authority.Authority) -> None:
    broker = ca.issue_broker("broker-1", ["broker-1.example.net"])
    site = ca.issue_site("par-edge-01")
    server, client = contexts(ca, broker, site)
    for host in ("localhost", "127.0.0.1", "broker-1.example.net"):
        peer = handshake(server, client, host)
        assert identity.site_from_certificate(peer, TRUST_DOMAIN) == "par-edge-01"
        assert identity.serial_of(peer) == site.serial


def test_a_site_certificate_cannot_serve_as_a_broker(ca: authority.Authority) -> None:
    site = ca.issue_site("par-edge-01")
    server, client = contexts(ca, site, site)
    with pytest.raises(ssl.SSLError):
        handshake(server, client, "localhost")


def test_tls_refuses_a_site_certificate_of_a_foreign_ca(
    ca: authority.Authority, foreign_ca: authority.Authority
) -> None:
    broker = ca.issue_broker("broker-1")
    impostor = foreign_ca.issue_site("par-edge-01")
    server, client = contexts(ca, broker, impostor)
    with pytest.raises(ssl.SSLError, match="certificate"):
        handshake(server, client, "localhost")


def test_tls_refuses_an_expired_site_certificate(ca: authority.Authority) -> None:
    broker = ca.issue_broker("broker-1")
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3)
    expired = ca.issue_site("par-edge-01", days=1, valid_from=start)
    server, client = contexts(ca, broker, expired)
    with pytest.raises(ssl.SSLError, match="certificate"):
        handshake(server, client, "localhost")


def test_the_broker_certificate_does_not_cover_other_hosts(ca: authority.Authority) -> None:
    broker = ca.issue_broker("broker-1")
    server, client = contexts(ca, broker, ca.issue_site("par-edge-01"))
    with pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch|match"):
        handshake(server, client, "elsewhere.example.net")
