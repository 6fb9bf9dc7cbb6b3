"""The CA: creation, reload, file modes, exact certificate contents, refusals."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker import errors
from broker.pki import authority, identity
from broker.pki.layout import Layout

TRUST_DOMAIN = "meridian.test"  # the conftest CA's

NOW = datetime.datetime.now(datetime.UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def san(cert: x509.Certificate) -> list[x509.GeneralName]:
    return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def public_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- the CA itself ------------------------------------------------------------------------


def test_ca_is_a_self_signed_p256_ca_naming_its_trust_domain(ca: authority.Authority) -> None:
    cert = ca.certificate
    cert.verify_directly_issued_by(cert)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    assert san(cert) == [x509.UniformResourceIdentifier("spiffe://meridian.test")]
    assert isinstance(ca.key.curve, ec.SECP256R1)
    assert (ca.paths.root / "ca.pem").read_bytes() == cert.public_bytes(serialization.Encoding.PEM)


def test_ca_validity_is_configurable(tmp_path: Path) -> None:
    ca = authority.create(tmp_path / "short", TRUST_DOMAIN, days=10)
    cert = ca.certificate
    # measured from the certificate's own start (back-dated by the skew allowance), not
    # from the wall clock at import: a long test session must not make this fail
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == (
        datetime.timedelta(days=10) + authority.CLOCK_SKEW
    )
    assert abs(cert.not_valid_before_utc - datetime.datetime.now(datetime.UTC)) < (
        datetime.timedelta(minutes=1) + authority.CLOCK_SKEW
    )


def test_metadata_records_the_trust_domain(ca: authority.Authority) -> None:
    data = json.loads((ca.paths.root / "pki.json").read_text())
    assert data["trust_domain"] == TRUST_DOMAIN
    assert data["ca_serial"] == f"{ca.certificate.serial_number:x}"
    assert authority.read_trust_domain(ca.paths.root) == TRUST_DOMAIN


def test_load_returns_the_same_ca(ca: authority.Authority) -> None:
    again = authority.load(ca.paths.root)
    assert again.trust_domain == TRUST_DOMAIN
    assert again.certificate == ca.certificate
    assert public_der(again.key.public_key()) == public_der(ca.key.public_key())
    issued = again.issue_site("par-edge-01")
    issued.certificate.verify_directly_issued_by(ca.certificate)


def test_existing_ca_is_not_replaced_without_force(ca: authority.Authority) -> None:
    before = ca.paths.ca_key.read_bytes()
    with pytest.raises(errors.PkiError, match="--force"):
        authority.create(ca.paths.root, TRUST_DOMAIN)
    assert ca.paths.ca_key.read_bytes() == before


def test_force_replaces_the_ca_and_old_certs_stop_verifying(ca: authority.Authority) -> None:
    old_site = ca.issue_site("par-edge-01")
    new = authority.create(ca.paths.root, TRUST_DOMAIN, force=True)
    assert new.certificate.serial_number != ca.certificate.serial_number
    assert authority.load(ca.paths.root).certificate == new.certificate
    with pytest.raises(InvalidSignature):
        old_site.certificate.verify_directly_issued_by(new.certificate)


def test_load_of_an_empty_directory_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(errors.PkiError, match="meridian pki init"):
        authority.load(tmp_path)


def test_load_refuses_a_key_that_is_not_the_cas(
    ca: authority.Authority, foreign_ca: authority.Authority
) -> None:
    ca.paths.ca_key.write_bytes(foreign_ca.paths.ca_key.read_bytes())
    with pytest.raises(errors.PkiError, match="not the private key"):
        authority.load(ca.paths.root)


def test_load_refuses_a_ca_of_another_trust_domain(ca: authority.Authority) -> None:
    ca.paths.metadata.write_text(json.dumps({"trust_domain": "other.test"}))
    with pytest.raises(errors.PkiError, match=r"other\.test"):
        authority.load(ca.paths.root)


@pytest.mark.parametrize("trust_domain", ["", "Meridian.test", "a b", "x/y", "-x", "é.test"])
def test_invalid_trust_domains_are_refused(tmp_path: Path, trust_domain: str) -> None:
    with pytest.raises(errors.PkiError, match="not a valid trust domain"):
        authority.create(tmp_path / "pki", trust_domain)
    assert not (tmp_path / "pki").exists()


# -- file modes ---------------------------------------------------------------------------


def test_private_keys_are_0600_and_certificates_0644(ca: authority.Authority) -> None:
    site = ca.issue_site("par-edge-01")
    broker = ca.issue_broker("broker-1")
    for key in (ca.paths.ca_key, site.key_path, broker.key_path):
        assert mode(key) == 0o600, key
    for cert in (ca.paths.ca_cert, site.cert_path, broker.cert_path):
        assert mode(cert) == 0o644 & ~umask(), cert
    assert site.key_path == Layout(ca.paths.root).site_key("par-edge-01")
    assert broker.cert_path == ca.paths.root / "brokers" / "broker-1.pem"


def test_replacing_a_world_readable_key_leaves_a_0600_key(ca: authority.Authority) -> None:
    path = ca.paths.site_key("par-edge-01")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"old")
    path.chmod(0o644)
    ca.issue_site("par-edge-01", replace=True)
    assert mode(path) == 0o600
    assert not list(path.parent.glob(".*.tmp"))


def test_keys_are_pkcs8_p256_matching_their_certificates(ca: authority.Authority) -> None:
    site = ca.issue_site("par-edge-01")
    pem = site.key_path.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    cert_key = site.certificate.public_key()
    assert isinstance(cert_key, ec.EllipticCurvePublicKey)
    assert public_der(key.public_key()) == public_der(cert_key)


# -- what is issued -----------------------------------------------------------------------


def test_site_certificate_names_exactly_its_site(ca: authority.Authority) -> None:
    site = ca.issue_site("par-edge-01", days=30)
    cert = x509.load_pem_x509_certificate(site.cert_path.read_bytes())
    assert cert == site.certificate
    assert san(cert) == [x509.UniformResourceIdentifier("spiffe://meridian.test/site/par-edge-01")]
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [
        "par-edge-01"
    ]
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca.certificate)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == (
        datetime.timedelta(days=30) + authority.CLOCK_SKEW
    )


def test_broker_certificate_serves_and_names_the_broker(ca: authority.Authority) -> None:
    broker = ca.issue_broker(
        "broker-1", ["Broker1.Example.NET", "10.0.0.5", "localhost", "::1"], days=90
    )
    assert san(broker.certificate) == [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("broker1.example.net"),
        x509.IPAddress(ipaddress.ip_address("10.0.0.5")),
        x509.IPAddress(ipaddress.ip_address("::1")),
        x509.UniformResourceIdentifier("spiffe://meridian.test/broker/broker-1"),
    ]
    assert eku(broker.certificate) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    broker.certificate.verify_directly_issued_by(ca.certificate)


@pytest.mark.parametrize("host", ["bad host", "under_score.example", "-x.example", "a..b"])
def test_bad_broker_hosts_are_refused(ca: authority.Authority, host: str) -> None:
    with pytest.raises(errors.PkiError, match="neither an IP address nor a DNS name"):
        ca.issue_broker("broker-1", [host])
    assert not ca.paths.broker_cert("broker-1").exists()


SITE_IDS = [
    ("a", True),
    ("0", True),
    ("par-edge-01", True),
    ("a" * 63, True),
    ("1-2-3", True),
    ("", False),
    ("-a", False),
    ("a-", False),
    ("Par-edge", False),
    ("a_b", False),
    ("a.b", False),
    ("a b", False),
    ("a/b", False),
    ("../x", False),
    ("a" * 64, False),
    ("café", False),
    ("a\n", False),
]


@pytest.mark.parametrize(("site_id", "valid"), SITE_IDS)
def test_site_id_validation(ca: authority.Authority, site_id: str, valid: bool) -> None:
    if valid:
        assert authority.check_site_id(site_id) == site_id
        assert (
            identity.site_from_certificate(ca.issue_site(site_id).certificate, TRUST_DOMAIN)
            == site_id
        )
        return
    with pytest.raises(errors.PkiError, match="not a valid site id"):
        ca.issue_site(site_id)
    with pytest.raises(errors.PkiError, match="lowercase"):
        authority.check_site_id(site_id)
    assert not ca.paths.sites.exists()


@pytest.mark.parametrize("name", ["", "Broker", "broker.1", "b/../x"])
def test_invalid_broker_names_are_refused(ca: authority.Authority, name: str) -> None:
    with pytest.raises(errors.PkiError, match="not a valid broker name"):
        ca.issue_broker(name)


def test_an_existing_site_certificate_is_not_replaced_without_asking(
    ca: authority.Authority,
) -> None:
    first = ca.issue_site("par-edge-01")
    with pytest.raises(errors.PkiError, match="--force"):
        ca.issue_site("par-edge-01")
    second = ca.issue_site("par-edge-01", replace=True)
    assert second.serial != first.serial
    assert identity.serial_of(second.cert_path.read_bytes()) == second.serial


@pytest.mark.parametrize("days", [0, -1])
def test_days_must_be_positive(ca: authority.Authority, days: int) -> None:
    with pytest.raises(errors.PkiError, match="at least 1"):
        ca.issue_site("par-edge-01", days=days)


def test_a_certificate_may_not_outlive_its_ca(tmp_path: Path) -> None:
    ca = authority.create(tmp_path / "pki", TRUST_DOMAIN, days=30)
    with pytest.raises(errors.PkiError, match="outlive the CA"):
        ca.issue_site("par-edge-01", days=31)
    assert ca.issue_site("par-edge-01", days=29).serial > 0


def test_valid_from_backdates_a_certificate(ca: authority.Authority) -> None:
    start = NOW - datetime.timedelta(days=10)
    site = ca.issue_site("old", days=1, valid_from=start)
    assert site.certificate.not_valid_before_utc == start.replace(microsecond=0)
    assert site.not_valid_after < NOW


# -- a second CA is not this CA -----------------------------------------------------------


def test_a_foreign_cas_certificate_does_not_verify(
    ca: authority.Authority, foreign_ca: authority.Authority
) -> None:
    # same trust domain and subject names: only the signature can tell them apart
    assert foreign_ca.certificate.subject == ca.certificate.subject
    impostor = foreign_ca.issue_site("par-edge-01").certificate
    with pytest.raises(InvalidSignature):
        impostor.verify_directly_issued_by(ca.certificate)
    with pytest.raises(errors.IdentityRefused, match="not issued by"):
        identity.check_issued_by(impostor, ca.certificate)
    identity.check_issued_by(ca.issue_site("par-edge-01").certificate, ca.certificate)


def test_a_ca_with_another_name_is_refused_too(ca: authority.Authority, tmp_path: Path) -> None:
    other = authority.create(tmp_path / "other", "other.test")
    impostor = other.issue_site("par-edge-01").certificate
    with pytest.raises(ValueError):
        impostor.verify_directly_issued_by(ca.certificate)
    with pytest.raises(errors.IdentityRefused, match="not issued by"):
        identity.check_issued_by(impostor, ca.certificate)
