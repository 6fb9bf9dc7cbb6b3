"""The failover machine's vocabulary: a VNF's members and phase, the events that drive
``machine.step`` and the actions it returns. Plain frozen values, no behaviour beyond
lookups: the machine (``machine.py``) keeps the invariants and re-exports these names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from broker import errors

ACTIVE, STANDBY = "active", "standby"


class Phase(enum.StrEnum):
    ACTIVE = "ACTIVE"  # every wanted member serves in its role
    DEGRADED = "DEGRADED"  # serving, redundancy reduced, nothing under way to restore it
    FAILING_OVER = "FAILING_OVER"  # a promotion is written, not yet reported applied
    HEALING = "HEALING"  # replacements are being placed or built
    FAILED = "FAILED"  # nothing serves and nothing is under way


class Ev(enum.StrEnum):
    """The event types a VNF's transitions record."""

    PLACED = "vnf.placed"
    ACTIVE = "vnf.active"
    DEGRADED = "vnf.degraded"
    MEMBER_LOST = "vnf.member_lost"
    FAILOVER_STARTED = "vnf.failover_started"
    FAILOVER_COMPLETED = "vnf.failover_completed"
    HEALED = "vnf.healed"
    FAILED = "vnf.failed"


@dataclass(frozen=True, slots=True)
class Policy:
    """A VNF's failover policy (the descriptor's ``redundancy.failover``, with settings)."""

    model: str = "active-standby"
    promote: str = "auto"
    restore: str = "auto"
    grace_ms: int = 0
    ready_timeout_ms: int = 120_000
    max_attempts: int = 3
    retry_ms: int = 30_000
    """A refused replacement is asked for again after this (capacity may be back)."""


@dataclass(frozen=True, slots=True)
class Member:
    """One member as the machine sees it; ``key`` (name@site) names it."""

    name: str
    site: str
    host: str = ""
    role: str = STANDBY
    """The wanted role (what the desired state says)."""
    applied_role: str = ""
    """The role the agent last reported applied."""
    ready: bool = False
    lost_ms: int | None = None
    """When its loss was first seen; ``None`` while it is not lost."""
    lost_reason: str = ""
    gone: bool = False
    """Its loss is of its server alone, gone from a site that serves (deleted out of
    band): its replacement may be built at that same site again."""
    condemned: str = ""
    """Why it is to go (lost, timeout, drain, failed); empty for a live member."""
    replace_wanted: bool = False
    """A replacement was asked for and has not been placed yet."""
    replace_role: str = ""
    refused: str = ""
    """Why its last replacement could not be placed."""
    refused_ms: int = 0
    """When it was refused: ``restore: auto`` asks again ``policy.retry_ms`` later."""
    released: bool = False
    """Its usage was given back (its site was forgotten) before its replacement was READY."""
    replaced_by: str = ""
    deleting: bool = False
    placed_ms: int = 0
    attempts: int = 1
    avoid_hosts: tuple[str, ...] = ()
    avoid_sites: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.name}@{self.site}"

    @property
    def serving(self) -> bool:
        return not self.condemned and self.lost_ms is None and self.ready


@dataclass(frozen=True, slots=True)
class Vnf:
    id: str
    policy: Policy
    members: tuple[Member, ...]
    wanted: int
    """How many live members the descriptor wants."""
    priority: int = 0
    phase: Phase = Phase.ACTIVE
    promote_after: str = ""
    """Planned switchover: the standby to promote once the old active reports demotion."""
    reason: str = ""

    def member(self, key: str) -> Member:
        for m in self.members:
            if m.key == key:
                return m
        raise errors.NotFound("member", key)


# -- events in ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lost:
    """A member's site or host went down, or its server is gone or failed for good."""

    key: str
    reason: str
    gone: bool = False
    """Only the server is gone, from a site that serves (see ``Member.gone``)."""


@dataclass(frozen=True, slots=True)
class Back:
    key: str


@dataclass(frozen=True, slots=True)
class Observed:
    """The agent's report: the member's server is READY (or not), in ``role``."""

    key: str
    ready: bool
    role: str = ""


@dataclass(frozen=True, slots=True)
class Placed:
    """The replacement of ``for_key`` was committed (claims and desired objects)."""

    for_key: str
    site: str
    host: str


@dataclass(frozen=True, slots=True)
class PlaceFailed:
    for_key: str
    reason: str


@dataclass(frozen=True, slots=True)
class Deleted:
    """The member's site confirmed its deletion, or the operator forgot the site."""

    key: str


@dataclass(frozen=True, slots=True)
class Tick:
    pass


@dataclass(frozen=True, slots=True)
class Failover:
    """Operator: switch the active role over (to a standby at ``to_site`` if given)."""

    to_site: str = ""


@dataclass(frozen=True, slots=True)
class Heal:
    """Operator: restore redundancy now (also after attempts ran out)."""


@dataclass(frozen=True, slots=True)
class Drain:
    """Operator: move every member off ``site`` (switch over first, delete when replaced)."""

    site: str


@dataclass(frozen=True, slots=True)
class Rejoin:
    """A drill's cut of the member ended: it was never really lost (its server kept
    running), so it rejoins as a live member — unless it is already replaced or going."""

    key: str


Event = (
    Lost
    | Back
    | Observed
    | Placed
    | PlaceFailed
    | Deleted
    | Tick
    | Failover
    | Heal
    | Drain
    | Rejoin
)


# -- actions out ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetRole:
    key: str
    role: str


@dataclass(frozen=True, slots=True)
class Replace:
    """Place a new member for ``key`` in ``role``, avoiding these sites and hosts."""

    key: str
    role: str
    avoid_sites: tuple[str, ...]
    avoid_hosts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class Release:
    """Give back the member's usage (its site confirmed the deletion)."""

    key: str


@dataclass(frozen=True, slots=True)
class Record:
    type: Ev
    reason: str
    at_ms: int


Action = SetRole | Replace | Delete | Release | Record


@dataclass(frozen=True, slots=True)
class Outcome:
    vnf: Vnf
    actions: tuple[Action, ...] = field(default=())


class Refused(errors.InvalidInput):
    """An operator control that cannot apply to this VNF as it stands."""

    def __init__(self, problem: str) -> None:
        super().__init__("vnf", problem)
