"""The ``Driver`` protocol every cloud driver implements, and the object kinds it knows.

A driver converges one object at a time and keeps invariant 4: ``apply`` of a generation
already applied changes nothing and returns the same status (no second server, no second
claim); a higher generation updates the object in place. ``delete`` of an object that
does not exist succeeds. Drivers hold the site's cloud credentials and never hand them
out (invariant 6): nothing they return carries a credential.

Failures are raised, not returned: ``errors.DriverError`` (with ``temporary``) when the
cloud refuses or fails, ``errors.InvalidSpec`` when the spec is wrong. A returned status
is ``READY``, ``PENDING`` (accepted, poll ``observe`` later), ``DELETED``, or — from
``observe`` only — ``FAILED`` when the cloud put the object into an error state.
"""

from __future__ import annotations

from typing import Protocol

from siteagent import models

# Dependency order: an object may refer only to kinds earlier in this tuple. Applies go
# front to back, deletes back to front (a server goes before its ports, a port before
# its network).
KINDS: tuple[str, ...] = (
    "quota",
    "keypair",
    "security_group",
    "image",
    "flavor",
    "server_group",
    "network",
    "subnet",
    "port",
    "server",
)
# The host's data path (bridges, SR-IOV VFs) is no cloud kind (the data-path driver wraps
# the cloud's), but ports and servers depend on it: it is applied before every cloud kind
# and deleted after them.
HOST_KINDS: tuple[str, ...] = ("datapath",)
_ORDERED = HOST_KINDS + KINDS
APPLY_ORDER: dict[str, int] = {kind: rank for rank, kind in enumerate(_ORDERED)}
DELETE_ORDER: dict[str, int] = {kind: rank for rank, kind in enumerate(reversed(_ORDERED))}
_KNOWN = frozenset(KINDS)

HOST_STATE = "meridian:host_state"
"""Inventory trait of a host that cannot run servers now (``down``): a sim host failed by
the sim's control, an OpenStack host whose nova-compute service is down."""


def is_known(kind: str) -> bool:
    """A kind the cloud drivers converge (the host kinds are not theirs)."""
    return kind in _KNOWN


class Driver(Protocol):
    """One site's cloud, as the reconciler and the session see it."""

    async def inventory(self) -> models.Inventory:
        """Every host with its cells, capacity and current claims."""
        ...

    async def usage(self) -> models.Usage:
        """What each project uses, by resource class."""
        ...

    async def apply(self, obj: models.DesiredObject) -> models.ObjectStatus:
        """Create or update ``obj`` to its generation; idempotent per generation."""
        ...

    async def observe(self, kind: str, name: str) -> models.ObjectStatus | None:
        """The object's current status, or ``None`` if it does not exist."""
        ...

    async def delete(self, kind: str, name: str) -> models.ObjectStatus:
        """Remove the object (a no-op if it is gone); the status is ``DELETED``."""
        ...

    async def close(self) -> None:
        """Release connections; the driver is not used afterwards."""
        ...
