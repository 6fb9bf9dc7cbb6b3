"""Who a certificate speaks for: the SPIFFE names Meridian issues, read back from certificates.

Keeps invariant 5 (identity is the certificate). Every site's client certificate carries
exactly one URI SAN, ``spiffe://<trust-domain>/site/<site-id>``; the gateway binds an agent
stream to the site that URI names and to nothing the agent says about itself. This module
holds the one spelling of those URIs (``authority`` writes them, the gateway reads them)
and the pure checks the gateway runs on a peer certificate: whose is it, is it current, is
it revoked. Chain verification against the CA is TLS's job; ``check_issued_by`` repeats it
where a caller holds a certificate outside a handshake.

Every refusal is an ``errors.IdentityRefused`` whose message says what is wrong and how to
get a certificate that works.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from broker import errors
from broker.models.site import SiteId

SCHEME = "spiffe://"
SITE_PATH = "site"
BROKER_PATH = "broker"

LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
"""A lowercase DNS label: what site ids and broker names must look like."""
TRUST_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9._-]{0,253}[a-z0-9])?")
"""SPIFFE trust domain: lowercase letters, digits, dots, dashes and underscores."""

ISSUE_HINT = "issue the site a certificate with `meridian pki issue-site <site-id>`"


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A parsed ``spiffe://<trust_domain>/<kind>/<name>`` URI (kind/name empty for the CA)."""

    trust_domain: str
    kind: str
    name: str

    @property
    def uri(self) -> str:
        if not self.kind:
            return f"{SCHEME}{self.trust_domain}"
        return f"{SCHEME}{self.trust_domain}/{self.kind}/{self.name}"


def is_label(text: str) -> bool:
    """True when ``text`` is a valid site id / broker name (a lowercase DNS label)."""
    return LABEL.fullmatch(text) is not None


def is_trust_domain(text: str) -> bool:
    return TRUST_DOMAIN.fullmatch(text) is not None


def trust_domain_uri(trust_domain: str) -> str:
    """The CA's own URI SAN: ``spiffe://<trust-domain>``."""
    return SpiffeId(trust_domain, "", "").uri


def site_uri(trust_domain: str, site_id: str) -> str:
    return SpiffeId(trust_domain, SITE_PATH, site_id).uri


def broker_uri(trust_domain: str, name: str) -> str:
    return SpiffeId(trust_domain, BROKER_PATH, name).uri


def parse_spiffe(uri: str) -> SpiffeId | None:
    """Parse a SPIFFE URI Meridian could have written; None for anything else."""
    if not uri.startswith(SCHEME):
        return None
    trust_domain, _, path = uri[len(SCHEME) :].partition("/")
    if not is_trust_domain(trust_domain):
        return None
    if not path:
        return SpiffeId(trust_domain, "", "")
    kind, sep, name = path.partition("/")
    if not sep or not kind or not name or "/" in name:
        return None
    return SpiffeId(trust_domain, kind, name)


def load_certificate(pem_or_der: bytes) -> x509.Certificate:
    """Read one certificate, PEM or DER; refuse bytes that are neither."""
    try:
        if pem_or_der.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(pem_or_der)
        return x509.load_der_x509_certificate(pem_or_der)
    except ValueError as exc:
        raise errors.IdentityRefused(f"not a readable X.509 certificate: {exc}") from exc


def _certificate(cert: x509.Certificate | bytes) -> x509.Certificate:
    return cert if isinstance(cert, x509.Certificate) else load_certificate(cert)


def uris_of(cert: x509.Certificate) -> list[str]:
    """Every URI SAN of ``cert`` (empty when it has no subjectAltName)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def site_from_certificate(pem_or_der: bytes | x509.Certificate, trust_domain: str) -> SiteId:
    """The site id a client certificate speaks for, or ``IdentityRefused`` saying why not.

    The certificate must carry exactly one SPIFFE URI, and it must be
    ``spiffe://<trust_domain>/site/<site-id>`` with a valid site id. A broker's certificate,
    one from another trust domain, or one naming several identities is refused.
    """
    cert = _certificate(pem_or_der)
    subject = cert.subject.rfc4514_string() or "(empty subject)"
    uris = uris_of(cert)
    spiffe = [u for u in uris if u.startswith(SCHEME)]
    if not spiffe:
        raise errors.IdentityRefused(
            f"certificate {subject} has no SPIFFE URI SAN naming a site; {ISSUE_HINT}"
        )
    local = [u for u in spiffe if u[len(SCHEME) :].partition("/")[0] == trust_domain]
    if not local:
        raise errors.IdentityRefused(
            f"certificate {subject} belongs to another trust domain ({', '.join(spiffe)}), "
            f"not {trust_domain!r}; {ISSUE_HINT} from this federation's CA"
        )
    sites = [(u, p) for u in local if (p := parse_spiffe(u)) is not None and p.kind == SITE_PATH]
    if len(sites) > 1 or (sites and len(spiffe) > 1):
        raise errors.IdentityRefused(
            f"certificate {subject} names several identities ({', '.join(spiffe)}); "
            f"a site certificate names exactly one site; {ISSUE_HINT}"
        )
    if not sites:
        raise errors.IdentityRefused(
            f"certificate {subject} is not a site identity ({', '.join(spiffe)}); "
            f"agents must present a site certificate; {ISSUE_HINT}"
        )
    uri, parsed = sites[0]
    if not is_label(parsed.name):
        raise errors.IdentityRefused(
            f"certificate {subject} names an invalid site id in {uri} "
            "(must be a lowercase DNS label); " + ISSUE_HINT
        )
    return SiteId(parsed.name)


def serial_of(cert: x509.Certificate | bytes) -> int:
    return _certificate(cert).serial_number


def not_valid_after(cert: x509.Certificate | bytes) -> datetime.datetime:
    """The certificate's expiry as an aware UTC datetime."""
    return _certificate(cert).not_valid_after_utc


def not_valid_before(cert: x509.Certificate | bytes) -> datetime.datetime:
    return _certificate(cert).not_valid_before_utc


def check_current(cert: x509.Certificate | bytes, now: datetime.datetime | None = None) -> None:
    """Refuse a certificate that has expired or is not valid yet at ``now`` (default: now)."""
    cert = _certificate(cert)
    now = now or datetime.datetime.now(datetime.UTC)
    if now > cert.not_valid_after_utc:
        raise errors.IdentityRefused(
            f"certificate {format_serial(cert.serial_number)} expired at "
            f"{cert.not_valid_after_utc.isoformat()}; issue a new one"
        )
    if now < cert.not_valid_before_utc:
        raise errors.IdentityRefused(
            f"certificate {format_serial(cert.serial_number)} is not valid before "
            f"{cert.not_valid_before_utc.isoformat()}; check the clocks of both hosts"
        )


def check_issued_by(cert: x509.Certificate | bytes, ca: x509.Certificate) -> None:
    """Refuse a certificate that ``ca`` did not sign (e.g. one from a foreign CA)."""
    cert = _certificate(cert)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise errors.IdentityRefused(
            f"certificate {format_serial(cert.serial_number)} was not issued by the CA "
            f"{ca.subject.rfc4514_string()}; {ISSUE_HINT} from this federation's CA"
        ) from exc


def format_serial(serial: int) -> str:
    """Lower-case hex without leading zeros: the spelling of ``keys.revoked`` and the API."""
    return f"{serial:x}"


def parse_serial(text: str) -> int:
    """Read a serial written as hex (``1a2b``, ``0x1A2B`` or ``1a:2b``)."""
    cleaned = text.strip().lower().replace(":", "")
    cleaned = cleaned.removeprefix("0x")
    if not cleaned or any(c not in "0123456789abcdef" for c in cleaned):
        raise errors.PkiError(
            f"{text!r} is not a certificate serial; give it in hex as "
            "`meridian pki show <cert>` prints it"
        )
    return int(cleaned, 16)


class RevocationList:
    """The revoked certificate serials a gateway replica knows of, in memory.

    The gateway keeps it current from the store (``keys.REVOKED``): ``replace`` after a
    listing, ``add``/``remove`` on watch events. Every method is a single operation on a
    set (or a reference swap), so a reader never sees a half-applied ``replace``.
    """

    def __init__(self, serials: Iterable[int] = ()) -> None:
        self._serials: set[int] = set(serials)

    def is_revoked(self, serial: int) -> bool:
        return serial in self._serials

    def add(self, serial: int) -> None:
        self._serials.add(serial)

    def remove(self, serial: int) -> None:
        """Forget ``serial``; forgetting one that was never revoked is not an error."""
        self._serials.discard(serial)

    def replace(self, serials: Iterable[int]) -> None:
        self._serials = set(serials)

    def __contains__(self, serial: object) -> bool:
        return serial in self._serials

    def __len__(self) -> int:
        return len(self._serials)

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._serials))
