"""The federation's certificate authority: create it, load it, issue broker and site certs.

Keeps invariant 5 (identity is the certificate): this is the only code that mints the
identities the gateway trusts. A site certificate names its site in exactly one URI SAN,
``spiffe://<trust-domain>/site/<site-id>``, with a clientAuth-only EKU, so it cannot pose
as a broker; a broker certificate names ``spiffe://<trust-domain>/broker/<name>`` and
serves TLS. The CA records its trust domain both in its own URI SAN and in ``pki.json``.

Private keys are EC P-256, written PKCS#8 PEM into files created with mode 0600 (never
widened, never chmod-ed afterwards) and moved into place atomically. Every failure is an
``errors.PkiError`` whose message says what to do next.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker import errors
from broker.pki import identity, layout
from broker.pki.layout import CERT_MODE, KEY_MODE, Layout
from replication import grant

CA_DAYS = 3650
LEAF_DAYS = 365
CLOCK_SKEW = datetime.timedelta(minutes=5)
"""Certificates start this long before they are issued, so a peer whose clock lags works."""
METADATA_VERSION = 1
ORGANIZATION = "Meridian"

_INIT_HINT = "create one with `meridian pki init --dir <dir>` or point --dir/MERIDIAN_PKI_DIR at it"


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate just issued, and where it and its key were written."""

    kind: str
    """``"broker"`` or ``"site"``."""
    name: str
    """Broker name or site id."""
    certificate: x509.Certificate
    cert_path: Path
    key_path: Path

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    @property
    def not_valid_after(self) -> datetime.datetime:
        return self.certificate.not_valid_after_utc


@dataclass(frozen=True, slots=True)
class Authority:
    """A loaded CA: its directory, trust domain, certificate and private key."""

    paths: Layout
    trust_domain: str
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    def issue_broker(
        self,
        name: str,
        hosts: Sequence[str] = (),
        days: int = LEAF_DAYS,
        *,
        valid_from: datetime.datetime | None = None,
        replace: bool = False,
    ) -> Issued:
        """Issue a broker replica's certificate (serverAuth + clientAuth).

        SANs: DNS ``localhost``, IP 127.0.0.1, every host in ``hosts`` (DNS names or IP
        addresses) and URI ``spiffe://<trust-domain>/broker/<name>``.
        """
        _check_label(name, "broker name")
        sans: list[x509.GeneralName] = [*_host_names(hosts)]
        sans.append(x509.UniformResourceIdentifier(identity.broker_uri(self.trust_domain, name)))
        return self._issue(
            "broker",
            name,
            sans,
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            self.paths.broker_cert(name),
            self.paths.broker_key(name),
            days,
            valid_from,
            replace,
        )

    def issue_site(
        self,
        site_id: str,
        days: int = LEAF_DAYS,
        *,
        valid_from: datetime.datetime | None = None,
        replace: bool = False,
        serves: Sequence[str] | None = None,
    ) -> Issued:
        """Issue a site agent's client certificate: CN and URI SAN name the site.

        ``serves`` (host names or addresses, ``localhost`` and 127.0.0.1 always) makes it a
        server certificate too: the agent then serves its images to other sites directly.
        """
        _check_label(site_id, "site id")
        uri = identity.site_uri(self.trust_domain, site_id)
        sans: list[x509.GeneralName] = [] if serves is None else _host_names(serves)
        if serves is not None:  # a destination checks it dialed this site (replication.grant)
            sans.append(x509.DNSName(grant.server_name(site_id)))
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if serves is not None:
            usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        return self._issue(
            "site",
            site_id,
            [*sans, x509.UniformResourceIdentifier(uri)],
            usages,
            self.paths.site_cert(site_id),
            self.paths.site_key(site_id),
            days,
            valid_from,
            replace,
        )

    def _issue(
        self,
        kind: str,
        name: str,
        sans: list[x509.GeneralName],
        usages: list[x509.ObjectIdentifier],
        cert_path: Path,
        key_path: Path,
        days: int,
        valid_from: datetime.datetime | None,
        replace: bool,
    ) -> Issued:
        if not replace and (cert_path.exists() or key_path.exists()):
            raise errors.PkiError(
                f"{cert_path} already exists: pass --force to issue a new {kind} certificate "
                f"for {name!r} (then revoke the old serial with `meridian pki revoke`)"
            )
        not_before, not_after = _window(days, valid_from)
        ca_end = self.certificate.not_valid_after_utc
        if not_after > ca_end:
            raise errors.PkiError(
                f"a {kind} certificate valid until {not_after:%Y-%m-%d} would outlive the CA "
                f"(valid until {ca_end:%Y-%m-%d}); ask for fewer --days or renew the CA"
            )
        key = ec.generate_private_key(ec.SECP256R1())
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
                critical=False,
            )
        )
        cert = builder.sign(self.key, hashes.SHA256())
        layout.write(key_path, _key_pem(key), KEY_MODE)
        layout.write(cert_path, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)
        return Issued(kind, name, cert, cert_path, key_path)


def create(
    directory: Path,
    trust_domain: str,
    *,
    days: int = CA_DAYS,
    force: bool = False,
    valid_from: datetime.datetime | None = None,
) -> Authority:
    """Create a new CA in ``directory``; refuse to replace an existing one unless ``force``."""
    if not identity.is_trust_domain(trust_domain):
        raise errors.PkiError(
            f"{trust_domain!r} is not a valid trust domain: use lowercase letters, digits, "
            "dots, dashes and underscores, e.g. meridian.example.net"
        )
    paths = Layout(Path(directory))
    existing = [p for p in (paths.ca_cert, paths.ca_key, paths.metadata) if p.exists()]
    if existing and not force:
        raise errors.PkiError(
            f"{paths.root} already holds a CA ({', '.join(p.name for p in existing)}); pass "
            "--force to replace it — every certificate it issued will stop being trusted"
        )
    not_before, not_after = _window(days, valid_from)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _ca_name(trust_domain)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(identity.trust_domain_uri(trust_domain))]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    layout.write(paths.ca_key, _key_pem(key), KEY_MODE)
    layout.write(paths.ca_cert, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)
    metadata = {
        "version": METADATA_VERSION,
        "trust_domain": trust_domain,
        "ca_serial": identity.format_serial(cert.serial_number),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "not_valid_after": not_after.isoformat(timespec="seconds"),
    }
    # written last: a directory with pki.json holds a complete CA
    layout.write(paths.metadata, (json.dumps(metadata, indent=2) + "\n").encode(), CERT_MODE)
    return Authority(paths, trust_domain, cert, key)


def load(directory: Path) -> Authority:
    """Load the CA in ``directory`` and check its pieces belong together."""
    paths = Layout(Path(directory))
    if not paths.metadata.is_file():
        raise errors.PkiError(
            f"{paths.root} holds no CA ({paths.metadata.name} missing); " + _INIT_HINT
        )
    trust_domain = read_trust_domain(paths.root)
    try:
        cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    except OSError as exc:
        raise errors.PkiError(f"cannot read the CA in {paths.root}: {exc}; " + _INIT_HINT) from exc
    except (ValueError, TypeError) as exc:
        raise errors.PkiError(
            f"the CA in {paths.root} is damaged ({exc}); restore it from backup or "
            "re-create it with `meridian pki init --force`"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or _public(key) != _public(cert):
        raise errors.PkiError(
            f"{paths.ca_key} is not the private key of {paths.ca_cert}; restore the pair "
            "from backup or re-create the CA with `meridian pki init --force`"
        )
    if identity.trust_domain_uri(trust_domain) not in identity.uris_of(cert):
        raise errors.PkiError(
            f"{paths.ca_cert} is not the CA of trust domain {trust_domain!r} recorded in "
            f"{paths.metadata}; restore the directory from backup"
        )
    return Authority(paths, trust_domain, cert, key)


def read_trust_domain(directory: Path) -> str:
    """The trust domain recorded in ``<directory>/pki.json``."""
    path = Layout(Path(directory)).metadata
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise errors.PkiError(f"cannot read {path}: {exc.strerror}; {_INIT_HINT}") from exc
    except ValueError as exc:
        raise errors.PkiError(f"{path} is not valid JSON ({exc}); restore it") from exc
    trust_domain = data.get("trust_domain") if isinstance(data, dict) else None
    if not isinstance(trust_domain, str) or not identity.is_trust_domain(trust_domain):
        raise errors.PkiError(f"{path} records no valid trust_domain; restore it")
    return trust_domain


def check_site_id(site_id: str) -> str:
    """Return ``site_id`` if it is a valid site id, else raise ``PkiError`` saying why."""
    _check_label(site_id, "site id")
    return site_id


# -- helpers ---------------------------------------------------------------------------


def _check_label(text: str, what: str) -> None:
    if not identity.is_label(text):
        raise errors.PkiError(
            f"{text!r} is not a valid {what}: use 1-63 lowercase letters, digits and dashes, "
            "starting and ending with a letter or digit (e.g. par-edge-01)"
        )


def _window(
    days: int, valid_from: datetime.datetime | None
) -> tuple[datetime.datetime, datetime.datetime]:
    if days < 1:
        raise errors.PkiError(f"--days must be at least 1, not {days}")
    if valid_from is None:
        start = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        return start - CLOCK_SKEW, start + datetime.timedelta(days=days)
    if valid_from.tzinfo is None:
        valid_from = valid_from.replace(tzinfo=datetime.UTC)
    return valid_from, valid_from + datetime.timedelta(days=days)


def _host_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    for raw in hosts:
        host = raw.strip()
        name: x509.GeneralName
        try:
            name = x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            host = host.lower().rstrip(".")
            if len(host) > 253 or not all(identity.is_label(p) for p in host.split(".")):
                raise errors.PkiError(
                    f"--host {raw!r} is neither an IP address nor a DNS name "
                    "(e.g. broker-1.meridian.example.net or 10.0.0.5)"
                ) from None
            name = x509.DNSName(host)
        if name not in names:
            names.append(name)
    return names


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_name(trust_domain: str) -> x509.Name:
    common_name = f"Meridian CA {trust_domain}"
    return _name(common_name if len(common_name) <= 64 else "Meridian CA")


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public(obj: ec.EllipticCurvePrivateKey | x509.Certificate) -> bytes:
    public = obj.public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
