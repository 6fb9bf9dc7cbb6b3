"""Site objects under ``desired/`` and ``observed/``: typed envelopes and the kind registry.

Every value stored under ``desired/<site>/<kind>/<name>`` is a ``Desired`` envelope
(``generation``, ``spec``, ``deleted``); every value under ``observed/<site>/<kind>/<name>``
is the type its kind registered — an agent's ``Status`` for the objects the agent
reconciles, a ``CopyReport`` or an ``ImageAudit`` for image replication. The gateway maps
``Desired`` and ``Status`` one to one to the wire's ``DesiredObject`` and ``ObjectStatus``.

Generation rules (invariant 4): a new object is generation ``FIRST``; every change of
spec and every deletion is the next generation (``revise``, ``tombstone``) — never a
number picked by the writer. Deletion is a tombstone (``deleted``, empty spec), never a
bare key delete, so an agent that reconnects later still learns of it.

Invariant 13 (one owner per key space): each (space, kind) is registered once, with its
value type and owner; a second registration raises, so two features cannot share a key
space, and a reader decodes a key only through the kind it belongs to.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypeVar

from broker import errors
from broker.models import codec

T = TypeVar("T")

FIRST = 1
"""The generation of an object's first version."""


class Space(enum.Enum):
    DESIRED = "desired"
    OBSERVED = "observed"


class Stored:
    """A value stored in etcd as JSON: ``encode`` and the validating ``decode``."""

    __slots__ = ()

    def encode(self) -> bytes:
        return codec.encode(self)

    @classmethod
    def decode(cls, raw: bytes) -> Self:
        """``InvalidInput`` naming the field when ``raw`` is not one."""
        return codec.decode(cls, raw)


@dataclass(frozen=True, slots=True)
class Desired(Stored):
    """What the broker wants to exist at a site (or not, when ``deleted``)."""

    generation: int = FIRST
    spec: Mapping[str, Any] = field(default_factory=dict)
    deleted: bool = False

    def revise(self, spec: Mapping[str, Any]) -> Desired:
        """The next generation, with ``spec``."""
        return Desired(self.generation + 1, spec, False)

    def tombstone(self) -> Desired:
        """The next generation, deleted: the agent removes the object."""
        return Desired(self.generation + 1, {}, True)


class State(enum.StrEnum):
    """An observed object's state, as the wire's ``ObjectState`` names it."""

    PENDING = "PENDING"
    READY = "READY"
    FAILED = "FAILED"
    """See ``Status.temporary``."""
    DELETED = "DELETED"
    """Gone at the site (after a tombstone)."""
    UNSPECIFIED = "UNSPECIFIED"
    """A state this broker does not know."""


GONE_OUTPUT = "gone"
"""A FAILED status's output (``"true"``) saying the object is gone from its site (deleted
out of band), not broken there: the agent builds it again for a new generation."""


@dataclass(frozen=True, slots=True)
class Status(Stored):
    """What an agent observed of one object (the gateway writes it from the wire's
    ``ObjectStatus``, field for field)."""

    kind: str
    name: str
    observed_generation: int
    """The generation the agent converged to, or tried to; 0: none yet."""
    state: State
    message: str = ""
    temporary: bool = False
    """FAILED only: the agent retries on its own; a permanent failure waits for a new
    generation."""
    outputs: Mapping[str, str] = field(default_factory=dict)
    """What the broker needs back, such as OpenStack ids and the host (``GONE_OUTPUT``)."""
    at_ms: int = 0
    """When the gateway received it (the broker's clock)."""

    def settled_state(self) -> State:
        """The state a follower should act on: PENDING until a generation was observed,
        and while a temporary failure is retried by the agent."""
        if self.observed_generation < FIRST:
            return State.PENDING
        if self.state is State.FAILED and self.temporary:
            return State.PENDING
        return self.state

    @property
    def gone(self) -> bool:
        return self.state is State.FAILED and self.outputs.get(GONE_OUTPUT) == "true"


@dataclass(frozen=True, slots=True)
class CopyReport(Stored):
    """One image copy attempt's last progress report from its destination."""

    attempt: int
    """The replica's ticket the report is about (older attempts are ignored)."""
    state: str
    offset: int = 0
    rate: float = 0.0
    """Bytes per second lately."""
    reason: str = ""
    temporary: bool = False
    sha256: str = ""
    """Of the verified bytes, once ``active``."""
    path: str = ""
    """How the attempt copies: ``direct`` (site to site, under a grant) or ``relay``."""


@dataclass(frozen=True, slots=True)
class Held:
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class ImageAudit(Stored):
    """A site's last complete listing of the images it holds; ``busy`` is not judged."""

    held: Mapping[str, Held] = field(default_factory=dict)
    busy: tuple[str, ...] = ()
    at_ms: int = 0
    direct_address: str = ""
    """Where the site serves images to other sites directly (``""``: behind NAT)."""


@dataclass(frozen=True, slots=True)
class PieceReport(Stored):
    """An image's piece list as its source site computed it from the bytes it holds."""

    sha256: str
    """The whole image the list describes (it is recorded only for the catalog's)."""
    pieces: str
    """``replication.pieces.Manifest.to_dict`` as JSON."""


@dataclass(frozen=True, slots=True)
class Kind(Generic[T]):
    """A registered key space ``<space>/<site>/<name>/...`` and the type of its values."""

    space: Space
    name: str
    type: type[T]
    owner: str

    def decode(self, raw: bytes) -> T:
        """The value of one key of this kind; ``InvalidInput`` when it is not one."""
        return codec.decode(self.type, raw)


_KINDS: dict[tuple[Space, str], Kind[Any]] = {}


def register(space: Space, name: str, type_: type[T], owner: str) -> Kind[T]:
    """Claim ``space``/``name`` for ``owner``; a kind is registered exactly once."""
    taken = _KINDS.get((space, name))
    if taken is not None:
        raise errors.AlreadyExists(
            "object kind", f"{space.value}/{name} (owned by {taken.owner}, wanted by {owner})"
        )
    kind = Kind(space, name, type_, owner)
    _KINDS[(space, name)] = kind
    return kind


def lookup(space: Space, name: str) -> Kind[Any] | None:
    return _KINDS.get((space, name))


def kinds(space: Space) -> list[Kind[Any]]:
    return [k for (s, _), k in sorted(_KINDS.items(), key=lambda x: x[0][1]) if s is space]


def agent_kind(name: str) -> bool:
    """Whether ``name`` is an object kind agents reconcile (desired ``Desired``, observed
    ``Status``): only those may be pushed to, and reported by, an agent."""
    observed = _KINDS.get((Space.OBSERVED, name))
    desired = _KINDS.get((Space.DESIRED, name))
    return (
        observed is not None
        and observed.type is Status
        and desired is not None
        and desired.type is Desired
    )


def _agent_objects(owner: str, *names: str) -> dict[str, Kind[Desired]]:
    out = {}
    for name in names:
        out[name] = register(Space.DESIRED, name, Desired, owner)
        register(Space.OBSERVED, name, Status, "gateway")
    return out


# -- the registry: one line per key space -------------------------------------------------

VNF_OBJECTS = _agent_objects(
    "controllers.vnfs", "image", "network", "subnet", "flavor", "server_group", "port", "server"
)
QUOTA = _agent_objects("controllers.quotasync", "quota")["quota"]
STITCHING = _agent_objects(
    "controllers.stitching", "gateway_endpoint", "network_stitch", "network_verify"
)
"""A site's gateway (its status carries the underlay address and MTU), its part of each
stitched network, and a verify round's probes (its status carries the results)."""
DATAPATH = _agent_objects("api.datapath", "datapath")["datapath"]
"""``desired/<site>/datapath/host``: the site's data-path profile, written by the API."""
AGENT_ONLY = _agent_objects("agent", "keypair", "security_group")
"""Kinds an agent reconciles that no broker controller writes yet."""
IMAGE_COPY = register(Space.OBSERVED, "imagecopy", CopyReport, "gateway.imagefeed")
"""``observed/<site>/imagecopy/<image id>``: a copy attempt's progress (not a VNF's image)."""
IMAGE_AUDIT = register(Space.OBSERVED, "imageaudit", ImageAudit, "gateway.imagefeed")
"""``observed/<site>/imageaudit/held``: the site's last complete image audit."""
IMAGE_PIECES = register(Space.OBSERVED, "imagepieces", PieceReport, "gateway.imagefeed")
"""``observed/<site>/imagepieces/<image id>``: the piece list the image's source reported."""


def first(spec: Mapping[str, Any]) -> Desired:
    return Desired(FIRST, spec, False)
