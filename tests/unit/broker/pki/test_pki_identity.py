"""Reading a site identity back from a certificate, validity, serials, revocation."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker import errors
from broker.pki import authority, identity
from broker.store import keys

TRUST_DOMAIN = "meridian.test"  # the conftest CA's

NOW = datetime.datetime.now(datetime.UTC)
URI = x509.UniformResourceIdentifier
Handmade = Callable[..., x509.Certificate]


def test_a_site_certificate_names_its_site(ca: authority.Authority) -> None:
    site = ca.issue_site("par-edge-01")
    pem = site.cert_path.read_bytes()
    der = site.certificate.public_bytes(serialization.Encoding.DER)
    assert identity.site_from_certificate(pem, TRUST_DOMAIN) == "par-edge-01"
    assert identity.site_from_certificate(der, TRUST_DOMAIN) == "par-edge-01"
    assert identity.site_from_certificate(site.certificate, TRUST_DOMAIN) == "par-edge-01"


def test_a_broker_certificate_is_not_a_site(ca: authority.Authority) -> None:
    broker = ca.issue_broker("broker-1").cert_path.read_bytes()
    with pytest.raises(errors.IdentityRefused, match="not a site identity"):
        identity.site_from_certificate(broker, TRUST_DOMAIN)


def test_a_certificate_of_another_trust_domain_is_refused(tmp_path: Path) -> None:
    other = authority.create(tmp_path / "other", "other.test")
    pem = other.issue_site("par-edge-01").cert_path.read_bytes()
    with pytest.raises(errors.IdentityRefused, match="another trust domain") as refused:
        identity.site_from_certificate(pem, TRUST_DOMAIN)
    assert "spiffe://other.test/site/par-edge-01" in str(refused.value)
    assert identity.site_from_certificate(pem, "other.test") == "par-edge-01"


def test_a_trust_domain_prefix_is_not_the_trust_domain(
    ca: authority.Authority, handmade: Handmade
) -> None:
    cert = handmade(ca, [URI("spiffe://meridian.test.evil/site/par-edge-01")])
    with pytest.raises(errors.IdentityRefused, match="another trust domain"):
        identity.site_from_certificate(cert, TRUST_DOMAIN)


@pytest.mark.parametrize(
    "sans",
    [
        None,
        [x509.DNSName("par-edge-01.example.net")],
        [x509.IPAddress(ipaddress.ip_address("10.0.0.1"))],
        [URI("https://meridian.test/site/par-edge-01")],
    ],
    ids=["no-san", "dns-only", "ip-only", "https-uri"],
)
def test_a_certificate_without_a_spiffe_uri_is_refused(
    ca: authority.Authority, handmade: Handmade, sans: list[x509.GeneralName] | None
) -> None:
    cert = handmade(ca, sans, cn="par-edge-01")  # the CN alone names nothing
    pem = cert.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(errors.IdentityRefused, match="no SPIFFE URI SAN"):
        identity.site_from_certificate(pem, TRUST_DOMAIN)


@pytest.mark.parametrize(
    "uris",
    [
        ["spiffe://meridian.test/site/a", "spiffe://meridian.test/site/b"],
        ["spiffe://meridian.test/site/a", "spiffe://meridian.test/site/a"],
        ["spiffe://meridian.test/site/a", "spiffe://meridian.test/broker/b"],
        ["spiffe://meridian.test/site/a", "spiffe://other.test/site/b"],
    ],
)
def test_several_identities_are_refused(
    ca: authority.Authority, handmade: Handmade, uris: list[str]
) -> None:
    cert = handmade(ca, [URI(u) for u in uris])
    with pytest.raises(errors.IdentityRefused, match="several identities"):
        identity.site_from_certificate(cert, TRUST_DOMAIN)


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://meridian.test/site/Par_Edge",
        "spiffe://meridian.test/site/a/b",
        "spiffe://meridian.test/site/",
        "spiffe://meridian.test",
        "spiffe://meridian.test/tenant/a",
    ],
)
def test_malformed_site_uris_are_refused(
    ca: authority.Authority, handmade: Handmade, uri: str
) -> None:
    cert = handmade(ca, [URI(uri)])
    with pytest.raises(errors.IdentityRefused, match=r"site id|not a site identity"):
        identity.site_from_certificate(cert, TRUST_DOMAIN)


def test_a_non_spiffe_uri_beside_the_site_uri_is_ignored(
    ca: authority.Authority, handmade: Handmade
) -> None:
    cert = handmade(ca, [URI("https://ops.example.net/"), URI("spiffe://meridian.test/site/a")])
    assert identity.site_from_certificate(cert, TRUST_DOMAIN) == "a"


def test_bytes_that_are_no_certificate_are_refused() -> None:
    with pytest.raises(errors.IdentityRefused, match=r"not a readable X\.509 certificate"):
        identity.site_from_certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n", TRUST_DOMAIN)
    with pytest.raises(errors.IdentityRefused):
        identity.site_from_certificate(b"\x30\x03\x02\x01\x01", TRUST_DOMAIN)


# -- validity -----------------------------------------------------------------------------


def test_an_expired_certificate_is_detected(ca: authority.Authority) -> None:
    old = ca.issue_site("par-edge-01", days=1, valid_from=NOW - datetime.timedelta(days=3))
    pem = old.cert_path.read_bytes()
    assert identity.not_valid_after(pem) < NOW
    assert identity.not_valid_after(pem) == old.certificate.not_valid_after_utc
    with pytest.raises(errors.IdentityRefused, match="expired"):
        identity.check_current(pem)
    # it was fine while it lasted
    identity.check_current(pem, now=NOW - datetime.timedelta(days=2, hours=12))


def test_a_certificate_from_the_future_is_refused(ca: authority.Authority) -> None:
    early = ca.issue_site("par-edge-01", days=2, valid_from=NOW + datetime.timedelta(days=1))
    with pytest.raises(errors.IdentityRefused, match="not valid before"):
        identity.check_current(early.certificate)
    assert identity.not_valid_before(early.certificate) > NOW


def test_a_fresh_certificate_is_current(ca: authority.Authority) -> None:
    identity.check_current(ca.issue_site("par-edge-01").cert_path.read_bytes())


# -- serials and revocation ---------------------------------------------------------------


def test_serial_of_reads_the_certificates_serial(ca: authority.Authority) -> None:
    site = ca.issue_site("par-edge-01")
    assert identity.serial_of(site.cert_path.read_bytes()) == site.serial
    assert identity.serial_of(site.certificate) == site.certificate.serial_number
    assert site.serial > 0


@pytest.mark.parametrize(
    ("text", "serial"),
    [("1a2b", 0x1A2B), ("0x1A2B", 0x1A2B), ("1a:2b", 0x1A2B), (" 01 ", 1), ("0", 0)],
)
def test_parse_serial(text: str, serial: int) -> None:
    assert identity.parse_serial(text) == serial


@pytest.mark.parametrize("text", ["", "0x", "xyz", "12g", "-1", "1 2"])
def test_parse_serial_refuses_what_is_not_hex(text: str) -> None:
    with pytest.raises(errors.PkiError, match="not a certificate serial"):
        identity.parse_serial(text)


def test_serials_are_spelled_as_the_store_keys_them(ca: authority.Authority) -> None:
    serial = ca.issue_site("par-edge-01").serial
    text = identity.format_serial(serial)
    assert keys.revoked(serial) == keys.REVOKED + text
    assert identity.parse_serial(text) == serial


def test_revocation_list() -> None:
    revoked = identity.RevocationList([1, 2])
    assert revoked.is_revoked(1) and revoked.is_revoked(2)
    assert not revoked.is_revoked(3)
    revoked.add(3)
    assert revoked.is_revoked(3) and 3 in revoked
    revoked.remove(1)
    revoked.remove(99)  # a delete for a serial never seen is harmless
    assert not revoked.is_revoked(1)
    assert list(revoked) == [2, 3] and len(revoked) == 2
    revoked.replace({7, 5})
    assert list(revoked) == [5, 7]
    assert not revoked.is_revoked(2) and not revoked.is_revoked(3)
    revoked.replace([])
    assert len(revoked) == 0 and not revoked.is_revoked(5)


def test_a_revoked_site_certificate_is_found_by_its_serial(ca: authority.Authority) -> None:
    lost = ca.issue_site("par-edge-01")
    kept = ca.issue_site("lon-core-01")
    revoked = identity.RevocationList()
    revoked.add(identity.parse_serial(identity.format_serial(lost.serial)))
    assert revoked.is_revoked(identity.serial_of(lost.cert_path.read_bytes()))
    assert not revoked.is_revoked(identity.serial_of(kept.cert_path.read_bytes()))


# -- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("spiffe://meridian.test/site/a", identity.SpiffeId("meridian.test", "site", "a")),
        ("spiffe://meridian.test/broker/b-1", identity.SpiffeId("meridian.test", "broker", "b-1")),
        ("spiffe://meridian.test", identity.SpiffeId("meridian.test", "", "")),
        ("spiffe://meridian.test/site", None),
        ("spiffe://meridian.test/site/a/b", None),
        ("spiffe://MERIDIAN/site/a", None),
        ("https://meridian.test/site/a", None),
    ],
)
def test_parse_spiffe(uri: str, parsed: identity.SpiffeId | None) -> None:
    assert identity.parse_spiffe(uri) == parsed
    if parsed is not None:
        assert parsed.uri == uri


def test_uri_builders() -> None:
    assert identity.site_uri("td.example", "s1") == "spiffe://td.example/site/s1"
    assert identity.broker_uri("td.example", "b1") == "spiffe://td.example/broker/b1"
    assert identity.trust_domain_uri("td.example") == "spiffe://td.example"
