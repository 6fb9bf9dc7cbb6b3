"""The global image catalog and each site's replica state.

An ``Image`` is what the catalog knows about bytes: size, sha256 and Glance's multihash
(``os_hash_algo`` / ``os_hash_value``), formats, properties, the site it came from. A
``Replica`` is one site's state for one image and moves only along

    absent → queued → transferring(bytes, rate) → verifying → active
                 ↘            ↘                       ↘
                  failed(reason)  (any non-active state may fail; failed → queued retries)

Invariant: ``active`` is reachable only from ``verifying`` (invariant 8 — nothing
corrupt is activated; the verifier is the only caller of ``activate``).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NewType

from replication import errors

ImageId = NewType("ImageId", str)
SiteId = NewType("SiteId", str)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
HASH_ALGOS = ("sha256", "sha512")
DISK_FORMATS = ("raw", "qcow2", "vmdk", "vdi", "iso", "ami")
CONTAINER_FORMATS = ("bare", "ovf", "ova", "docker")


@dataclass(frozen=True, slots=True)
class Image:
    """One catalog entry; the digests are lowercase hex."""

    id: ImageId
    name: str
    size: int
    sha256: str
    source_site: SiteId
    os_hash_algo: str = "sha512"
    os_hash_value: str = ""
    disk_format: str = "raw"
    container_format: str = "bare"
    properties: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.id):
            raise errors.InvalidImage("id", "letters, digits, '.', '_', '-' (1-128)")
        if not self.name:
            raise errors.InvalidImage("name", "must not be empty")
        if self.size < 0:
            raise errors.InvalidImage("size", "must be >= 0")
        if not _HEX64.fullmatch(self.sha256):
            raise errors.InvalidImage("sha256", "64 lowercase hex digits")
        if not _ID.fullmatch(self.source_site):
            raise errors.InvalidImage("source_site", "not a site id")
        if self.os_hash_algo not in HASH_ALGOS:
            raise errors.InvalidImage("os_hash_algo", f"one of {', '.join(HASH_ALGOS)}")
        if self.disk_format not in DISK_FORMATS:
            raise errors.InvalidImage("disk_format", f"one of {', '.join(DISK_FORMATS)}")
        if self.container_format not in CONTAINER_FORMATS:
            raise errors.InvalidImage("container_format", f"one of {', '.join(CONTAINER_FORMATS)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "source_site": self.source_site,
            "os_hash_algo": self.os_hash_algo,
            "os_hash_value": self.os_hash_value,
            "disk_format": self.disk_format,
            "container_format": self.container_format,
            "properties": dict(self.properties),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Image:
        try:
            return cls(
                id=ImageId(str(d["id"])),
                name=str(d["name"]),
                size=int(d["size"]),
                sha256=str(d["sha256"]),
                source_site=SiteId(str(d["source_site"])),
                os_hash_algo=str(d.get("os_hash_algo", "sha512")),
                os_hash_value=str(d.get("os_hash_value", "")),
                disk_format=str(d.get("disk_format", "raw")),
                container_format=str(d.get("container_format", "bare")),
                properties={str(k): str(v) for k, v in dict(d.get("properties", {})).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.InvalidImage("image", f"malformed entry: {exc}") from exc


class State(enum.StrEnum):
    ABSENT = "absent"
    QUEUED = "queued"
    TRANSFERRING = "transferring"
    VERIFYING = "verifying"
    ACTIVE = "active"
    FAILED = "failed"


_ALLOWED: dict[State, frozenset[State]] = {
    State.ABSENT: frozenset({State.QUEUED, State.FAILED}),
    State.QUEUED: frozenset({State.TRANSFERRING, State.FAILED}),
    # transferring -> transferring records progress; -> queued is a resumable interruption
    State.TRANSFERRING: frozenset(
        {State.TRANSFERRING, State.VERIFYING, State.QUEUED, State.FAILED}
    ),
    State.VERIFYING: frozenset({State.ACTIVE, State.FAILED, State.QUEUED}),
    State.ACTIVE: frozenset({State.QUEUED}),  # drift repair re-queues
    State.FAILED: frozenset({State.QUEUED}),
}


@dataclass(frozen=True, slots=True)
class Replica:
    """One site's state for one image. ``offset`` is the last verified byte count."""

    image: ImageId
    site: SiteId
    state: State = State.ABSENT
    offset: int = 0
    rate: float = 0.0  # bytes/s over the last progress report
    reason: str = ""
    attempts: int = 0
    priority: int = 0  # higher first; on-demand replicas get ON_DEMAND_PRIORITY
    source: str = ""  # the site the current attempt copies from ("" = none assigned yet)
    sha256: str = ""  # the digest the site last reported for the bytes it holds
    repairs: int = 0  # times drift (missing, wrong checksum) re-queued an active replica
    generation: int = 0  # the catalog record's generation this replica was queued for
    swarm: bool = False  # the current attempt fetches pieces from the swarm (the tracker's)

    @property
    def ticket(self) -> int:
        """Names one copy attempt, growing across generations (``attempts`` restarts at
        each): copy orders carry it and reports bring it back, so a stale report or a
        duplicate order is told from the current one."""
        return self.generation * 1_000_000 + self.attempts

    def _to(self, wanted: State, **changes: Any) -> Replica:
        if wanted not in _ALLOWED[self.state]:
            raise errors.IllegalTransition(self.site, self.state.value, wanted.value)
        return replace(self, state=wanted, **changes)

    def queue(self, *, priority: int | None = None) -> Replica:
        return self._to(
            State.QUEUED,
            reason="",
            rate=0.0,
            priority=self.priority if priority is None else priority,
        )

    def start(self, source: str = "", *, swarm: bool = False) -> Replica:
        return self._to(
            State.TRANSFERRING, attempts=self.attempts + 1, source=source, swarm=swarm
        )

    def progress(self, offset: int, rate: float) -> Replica:
        return self._to(State.TRANSFERRING, offset=offset, rate=rate)

    def verify(self) -> Replica:
        return self._to(State.VERIFYING, rate=0.0)

    def activate(self, size: int) -> Replica:
        return self._to(State.ACTIVE, offset=size, reason="")

    def fail(self, reason: str) -> Replica:
        return self._to(State.FAILED, reason=reason, rate=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "site": self.site,
            "state": self.state.value,
            "offset": self.offset,
            "rate": self.rate,
            "reason": self.reason,
            "attempts": self.attempts,
            "priority": self.priority,
            "source": self.source,
            "sha256": self.sha256,
            "repairs": self.repairs,
            "generation": self.generation,
            "swarm": self.swarm,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Replica:
        try:
            return cls(
                image=ImageId(str(d["image"])),
                site=SiteId(str(d["site"])),
                state=State(str(d["state"])),
                offset=int(d.get("offset", 0)),
                rate=float(d.get("rate", 0.0)),
                reason=str(d.get("reason", "")),
                attempts=int(d.get("attempts", 0)),
                priority=int(d.get("priority", 0)),
                source=str(d.get("source", "")),
                sha256=str(d.get("sha256", "")),
                repairs=int(d.get("repairs", 0)),
                generation=int(d.get("generation", 0)),
                swarm=bool(d.get("swarm", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.InvalidImage("replica", f"malformed entry: {exc}") from exc


def holders(replicas: Mapping[SiteId, Replica]) -> frozenset[SiteId]:
    """Sites whose replica is active: they can serve the image."""
    return frozenset(s for s, r in replicas.items() if r.state is State.ACTIVE)


@dataclass(frozen=True, slots=True)
class Entry:
    """What ``images/<id>`` holds: the image, where it should be, and a generation that
    every replicate request bumps (a failed replica of an older generation is retried)."""

    image: Image
    policy: str = ""  # "" (targets only), "all", or a selector such as "region=eu"
    targets: tuple[SiteId, ...] = ()
    generation: int = 1
    created_ms: int = 0

    def encode(self) -> bytes:
        body = {
            "image": self.image.to_dict(),
            "policy": self.policy,
            "targets": list(self.targets),
            "generation": self.generation,
            "created_ms": self.created_ms,
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Entry:
        try:
            d = json.loads(raw)
            return cls(
                image=Image.from_dict(d["image"]),
                policy=str(d.get("policy", "")),
                targets=tuple(SiteId(str(t)) for t in d.get("targets", [])),
                generation=int(d.get("generation", 1)),
                created_ms=int(d.get("created_ms", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.InvalidImage("entry", f"malformed catalog entry: {exc}") from exc


def valid_id(value: str) -> bool:
    """An image or site id as the catalog allows it, matched in full (no trailing newline)."""
    return _ID.fullmatch(value) is not None


def encode_replica(r: Replica) -> bytes:
    return json.dumps(r.to_dict(), separators=(",", ":"), sort_keys=True).encode()


def decode_replica(raw: bytes) -> Replica:
    try:
        return Replica.from_dict(json.loads(raw))
    except ValueError as exc:
        raise errors.InvalidImage("replica", f"malformed entry: {exc}") from exc
