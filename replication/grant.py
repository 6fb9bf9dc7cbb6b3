"""Transfer grants: the broker's signed permission for one site to read one image from
another site directly, until an expiry.

A grant names ``image``, ``source``, ``destination`` and ``expires_ms`` (Unix ms) — and,
for swarming, the digest of the image's piece list (``pieces``, as the catalog records
it: ``replication.pieces.Manifest.digest``); the
token is ``base64url(payload) "." base64url(Ed25519 signature of payload)``, the payload a
canonical JSON object. The broker signs (``sign``) when it orders a copy over a direct
path; the serving agent checks (``refusal``) before it reads a byte.

Invariant: a source serves ``image`` to ``caller`` only when the token's signature is the
broker's, every named field matches (the caller is the site its certificate names, the
source is this site) and the grant has not expired. Anything else is refused with the
reason, and a malformed token is a refusal, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from replication import errors

__all__ = [
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "Grant",
    "Verifier",
    "load_private",
    "load_public",
    "refusal",
    "server_name",
    "sign",
]

MAX_TOKEN = 2048
SERVER_SUFFIX = "site.meridian"


def server_name(site: str) -> str:
    """The DNS name a site's serving certificate carries for its own id: a destination
    dialing a source's direct address expects it (``grpc.ssl_target_name_override``), so
    whatever answers there must hold that site's certificate, not any other site's."""
    return f"{site}.{SERVER_SUFFIX}"


@dataclass(frozen=True, slots=True)
class Grant:
    image: str
    source: str
    destination: str
    expires_ms: int
    pieces: str = ""  # swarming: the digest of the piece list the transfer may serve

    def payload(self) -> bytes:
        body: dict[str, object] = {
            "image": self.image,
            "source": self.source,
            "destination": self.destination,
            "expires_ms": self.expires_ms,
        }
        if self.pieces:
            body["pieces"] = self.pieces
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def sign(grant: Grant, key: Ed25519PrivateKey) -> str:
    payload = grant.payload()
    return f"{_b64(payload)}.{_b64(key.sign(payload))}"


def _decode(token: str, key: Ed25519PublicKey) -> Grant | str:
    if not token:
        return "no transfer grant"
    if len(token) > MAX_TOKEN:
        return f"the transfer grant is longer than {MAX_TOKEN} characters"
    body, dot, sig = token.partition(".")
    try:
        payload, signature = _unb64(body), _unb64(sig)
    except (binascii.Error, ValueError):
        return "the transfer grant is not base64url"
    if not dot:
        return "the transfer grant is not payload.signature"
    try:
        key.verify(signature, payload)
    except InvalidSignature:
        return "the transfer grant's signature is not the broker's"
    try:
        d = json.loads(payload)
        return Grant(
            str(d["image"]),
            str(d["source"]),
            str(d["destination"]),
            int(d["expires_ms"]),
            str(d.get("pieces", "")),
        )
    except (ValueError, KeyError, TypeError) as exc:
        return f"the transfer grant is malformed: {exc}"


def refusal(
    token: str,
    key: Ed25519PublicKey,
    *,
    image: str,
    source: str,
    caller: str,
    now_ms: int,
    pieces: str = "",
) -> str | None:
    """Why ``caller`` may not read ``image`` from ``source`` under ``token`` (``None``: it may)."""
    grant = _decode(token, key)
    if isinstance(grant, str):
        return grant
    return _mismatch(grant, image=image, source=source, caller=caller, now_ms=now_ms, pieces=pieces)


class Verifier:
    """``refusal`` with each token's signature checked once: a swarm asks a peer for its
    pieces and haves many times under one grant, and an Ed25519 verification per call
    cost the serving site more CPU than the bytes. Only tokens whose signature verified
    are remembered (at most ``size``; then forgotten all at once); every field, and the
    expiry, is still checked on every call."""

    def __init__(self, key: Ed25519PublicKey, size: int = 4096) -> None:
        self.key, self.size = key, size
        self._verified: dict[str, Grant] = {}

    def refusal(
        self, token: str, *, image: str, source: str, caller: str, now_ms: int, pieces: str = ""
    ) -> str | None:
        grant = self._verified.get(token)
        if grant is None:
            decoded = _decode(token, self.key)
            if isinstance(decoded, str):
                return decoded
            if len(self._verified) >= self.size:
                self._verified.clear()
            self._verified[token] = grant = decoded
        return _mismatch(
            grant, image=image, source=source, caller=caller, now_ms=now_ms, pieces=pieces
        )


def _mismatch(
    grant: Grant, *, image: str, source: str, caller: str, now_ms: int, pieces: str
) -> str | None:
    if grant.destination != caller:
        return f"the transfer grant is for site {grant.destination}, not {caller}"
    if grant.source != source:
        return f"the transfer grant names source {grant.source}, not {source}"
    if grant.image != image:
        return f"the transfer grant is for image {grant.image}, not {image}"
    if grant.pieces != pieces:
        named, asked = grant.pieces or "(none)", pieces or "(none)"
        return f"the transfer grant is for piece list {named}, not {asked}"
    if grant.expires_ms <= now_ms:
        return f"the transfer grant expired {now_ms - grant.expires_ms} ms ago"
    return None


def load_private(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise errors.InvalidImage("grant key", f"unreadable: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise errors.InvalidImage("grant key", "not an Ed25519 private key")
    return key


def load_public(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise errors.InvalidImage("grant public key", f"unreadable: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise errors.InvalidImage("grant public key", "not an Ed25519 public key")
    return key
