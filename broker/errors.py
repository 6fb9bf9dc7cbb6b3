"""Every error the broker raises, under one root.

Foreign exceptions (etcd, grpc, keystoneauth1, cryptography) are translated where they
enter — the store, the gateway, the auth module — with ``raise X(...) from exc``; they
never travel further. A ``Temporary`` error carries a delay and is worth retrying as it
is; every other error is permanent until its input changes. The API maps each class to
one HTTP status (``broker/api/problems.py``).

BrokerError
├── Temporary                      (retry_after: seconds)
│   ├── StoreUnavailable           etcd cannot be reached or timed out
│   └── Conflict                   a concurrent writer won; re-read and retry
├── LeaseExpired                   a lease is gone (expired or revoked)
├── FencedOut                      a controller write compared a stale leader revision
├── NotFound                       (kind, name)
├── AlreadyExists                  (kind, name)
├── InvalidInput                   (field: dotted path, problem)
│   ├── TooLarge                   a body or document over its bound  → 413
│   └── BodyStalled                a body stopped arriving mid-way    → 408
├── AllocationRefused              (pool, detail: what is left)        → 409
│   ├── PoolExhausted              nothing of the asked size is free
│   └── AddressOverlap             the asked value overlaps one held
├── InUse                          (kind, name, users)                 → 409
├── Refused                        (kind, reason): not now, as things stand → 409
├── AuthError                      no or bad credentials            → 401
│   └── Forbidden                  authenticated, lacks the role    → 403
├── PkiError                       certificates and keys
├── SettingsError                  (problems: every "dotted.path: what is wrong")
└── WireError                      a stream broke the protocol
    ├── IdentityRefused            certificate missing/revoked/for another site
    └── VersionRefused             protocol version not served
"""

from __future__ import annotations


class BrokerError(Exception):
    """Root of every error the broker raises."""


class Temporary(BrokerError):
    """Retrying the same request later may succeed."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(Temporary):
    """etcd is unreachable, timed out, or has no leader."""


class Conflict(Temporary):
    """A concurrent writer changed what this request read; re-read and retry."""


class LeaseExpired(BrokerError):
    """The lease is gone: it expired or was revoked."""


class FencedOut(BrokerError):
    """A fenced write compared a leader revision that is no longer current.

    The writer is no longer (or never was) the leader; the write did not land.
    """

    def __init__(self, message: str, *, fence: int) -> None:
        super().__init__(message)
        self.fence = fence


class NotFound(BrokerError):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} does not exist")
        self.kind = kind
        self.name = name


class AlreadyExists(BrokerError):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} already exists")
        self.kind = kind
        self.name = name


class InvalidInput(BrokerError):
    """A request field is wrong; ``field`` is its dotted path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class TooLarge(InvalidInput):
    """A request body (or a document in it) is over the bound the API accepts."""


class BodyStalled(InvalidInput):
    """A request body stopped arriving before its end (a sender holding the connection)."""


class AllocationRefused(BrokerError):
    """A global pool (addresses, VNIs, route targets, VLAN ids) cannot give what was asked."""

    def __init__(self, pool: str, detail: str) -> None:
        super().__init__(f"{pool}: {detail}")
        self.pool = pool
        self.detail = detail


class PoolExhausted(AllocationRefused):
    """Nothing of the asked size is free; ``detail`` says what is left."""


class AddressOverlap(AllocationRefused):
    """The asked value or block overlaps one that is held; ``detail`` names it."""


class InUse(BrokerError):
    """An object cannot go while others use it; ``users`` names them."""

    def __init__(self, kind: str, name: str, users: list[str]) -> None:
        super().__init__(f"{kind} {name!r} is used by {', '.join(users)}")
        self.kind = kind
        self.name = name
        self.users = users


class Refused(BrokerError):
    """A request that is well formed but cannot be done as the federation stands (a
    live drill while a site is DOWN); ``reason`` says what has to change."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind} refused: {reason}")
        self.kind = kind
        self.reason = reason


class AuthError(BrokerError):
    """No credentials, or credentials that could not be validated."""


class Forbidden(AuthError):
    """Authenticated, but without a role this request needs."""


class PkiError(BrokerError):
    """Creating, loading or checking certificates and keys failed."""


class SettingsError(BrokerError):
    """The configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings:\n  " + "\n  ".join(problems))
        self.problems = problems


class WireError(BrokerError):
    """An agent stream broke the wire protocol."""


class IdentityRefused(WireError):
    """The peer's certificate does not let it speak for the site it claims."""


class VersionRefused(WireError):
    """The agent speaks a protocol version this broker does not serve."""
