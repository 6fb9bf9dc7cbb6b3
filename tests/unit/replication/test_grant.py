"""Transfer grants: only the broker's signature over exactly this pull, unexpired, passes."""

from __future__ import annotations

import pytest

from replication import errors, grant

KEY = grant.Ed25519PrivateKey.generate()
G = grant.Grant("img", "site-a", "site-b", 10_000)


def check(token: str, **over: object) -> str | None:
    fields: dict[str, object] = {
        "image": "img",
        "source": "site-a",
        "caller": "site-b",
        "now_ms": 5_000,
    }
    fields.update(over)
    return grant.refusal(token, KEY.public_key(), **fields)  # type: ignore[arg-type]


def test_the_named_pull_before_expiry_passes() -> None:
    assert check(grant.sign(G, KEY)) is None


@pytest.mark.parametrize(
    ("token", "over", "why"),
    [
        (grant.sign(G, KEY), {"caller": "site-c"}, "is for site site-b"),
        (grant.sign(G, KEY), {"image": "other"}, "is for image img"),
        (grant.sign(G, KEY), {"source": "site-c"}, "names source site-a"),
        (grant.sign(G, KEY), {"now_ms": 10_000}, "expired"),
        (grant.sign(G, grant.Ed25519PrivateKey.generate()), {}, "not the broker's"),
        ("", {}, "no transfer grant"),
        ("!!!.???", {}, "not base64url"),
        ("abc", {}, "not payload.signature"),
        ("a" * 5000, {}, "longer than"),
    ],
)
def test_everything_else_is_refused_with_the_reason(
    token: str, over: dict[str, object], why: str
) -> None:
    refused = check(token, **over)
    assert refused is not None and why in refused


def test_a_signed_payload_that_is_not_a_grant_is_refused() -> None:
    payload = b'{"image":"img"}'
    token = f"{grant._b64(payload)}.{grant._b64(KEY.sign(payload))}"
    assert "malformed" in (check(token) or "")


def test_keys_load_from_pem_and_anything_else_is_a_clear_error() -> None:
    from cryptography.hazmat.primitives import serialization as s

    pem = KEY.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())
    pub = KEY.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo)
    assert check(grant.sign(G, grant.load_private(pem))) is None
    assert grant.load_public(pub).public_bytes_raw() == KEY.public_key().public_bytes_raw()
    with pytest.raises(errors.InvalidImage, match="unreadable"):
        grant.load_private(b"junk")
    with pytest.raises(errors.InvalidImage, match="unreadable"):
        grant.load_public(b"junk")


def test_a_verifier_checks_each_signature_once_and_every_field_every_time() -> None:
    """A swarm asks again and again under one grant: the signature is verified once; the
    fields and the expiry on every call; a forged token is never remembered."""
    key = grant.Ed25519PrivateKey.generate()

    class Counting:
        calls = 0

        def verify(self, signature: bytes, data: bytes) -> None:
            Counting.calls += 1
            key.public_key().verify(signature, data)

    verifier = grant.Verifier(Counting(), size=2)  # type: ignore[arg-type]
    token = grant.sign(grant.Grant("img", "src", "dst", 10_000, "d" * 64), key)
    ask = {"image": "img", "source": "src", "caller": "dst", "pieces": "d" * 64}
    for now in (1, 2, 3):
        assert verifier.refusal(token, now_ms=now, **ask) is None
    assert Counting.calls == 1
    wrong = verifier.refusal(token, now_ms=4, **{**ask, "caller": "x"})
    assert wrong is not None and "for site dst, not x" in wrong
    assert "expired" in (verifier.refusal(token, now_ms=20_000, **ask) or "")
    body, _, sig = token.partition(".")
    forged = f"{body}.{sig[::-1]}"
    for _ in range(2):
        assert verifier.refusal(forged, now_ms=5, **ask) is not None
    assert Counting.calls == 3, "a refused token is checked again each time"
