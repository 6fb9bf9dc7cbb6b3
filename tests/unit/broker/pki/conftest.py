"""Fixtures for the PKI tests: a real CA in a temporary directory, and hand-made certs."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.pki import authority

TRUST_DOMAIN = "meridian.test"


@pytest.fixture
def ca(tmp_path: Path) -> authority.Authority:
    return authority.create(tmp_path / "pki", TRUST_DOMAIN)


@pytest.fixture
def foreign_ca(tmp_path: Path) -> authority.Authority:
    """A second CA with the same trust domain and names: only its key differs."""
    return authority.create(tmp_path / "foreign", TRUST_DOMAIN)


def _handmade(
    ca: authority.Authority, sans: Sequence[x509.GeneralName] | None, cn: str = "handmade"
) -> x509.Certificate:
    """A leaf signed by ``ca`` with exactly ``sans`` (None: no SAN extension at all)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


Handmade = Callable[..., x509.Certificate]


@pytest.fixture
def handmade() -> Handmade:
    """``handmade(ca, sans, cn=...)``: a leaf with exactly the SANs a test needs."""
    return _handmade
