"""Where a PKI directory keeps its files: the one place that spells those paths.

A PKI directory (``meridian pki init --dir D``) holds::

    D/pki.json               trust domain and CA facts (metadata, not secret)
    D/ca.pem  D/ca.key       the federation CA
    D/brokers/<name>.pem     each broker replica's server + client certificate
    D/brokers/<name>.key
    D/sites/<site-id>.pem    each site agent's client certificate (invariant 5)
    D/sites/<site-id>.key

Private keys are mode 0600 and certificates 0644: ``write`` creates every file with its
mode (a key is never readable by others, not even for an instant) and moves it into
place atomically. ``authority`` writes; the CLI and the deployment tooling read.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from broker import errors

METADATA = "pki.json"
CA_CERT = "ca.pem"
CA_KEY = "ca.key"
BROKERS = "brokers"
SITES = "sites"
CERT_SUFFIX = ".pem"
KEY_SUFFIX = ".key"

KEY_MODE = 0o600
CERT_MODE = 0o644
DIR_MODE = 0o755


@dataclass(frozen=True, slots=True)
class Layout:
    """The paths of one PKI directory (nothing is read or created by this class)."""

    root: Path

    @property
    def metadata(self) -> Path:
        return self.root / METADATA

    @property
    def ca_cert(self) -> Path:
        return self.root / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.root / CA_KEY

    @property
    def brokers(self) -> Path:
        return self.root / BROKERS

    @property
    def sites(self) -> Path:
        return self.root / SITES

    def broker_cert(self, name: str) -> Path:
        return self.brokers / f"{name}{CERT_SUFFIX}"

    def broker_key(self, name: str) -> Path:
        return self.brokers / f"{name}{KEY_SUFFIX}"

    def site_cert(self, site_id: str) -> Path:
        return self.sites / f"{site_id}{CERT_SUFFIX}"

    def site_key(self, site_id: str) -> Path:
        return self.sites / f"{site_id}{KEY_SUFFIX}"


def write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` atomically, in a file created with ``mode``.

    The bytes go into a fresh temporary file opened with ``O_CREAT | O_EXCL`` and ``mode``
    (so a key is never readable by others, not even for an instant) and then replace
    ``path`` in one rename.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise errors.PkiError(
            f"cannot write {path}: {exc.strerror or exc}; check the directory exists and "
            "is writable by you"
        ) from exc
