"""``networks/<id>``: a stitched network as asked for, and where it stands.

The API writes the request (``PENDING``), a verify request (``verify_nonce``) and the
deletion mark (refused while a VNF in ``vnfs`` still exists); the stitching controller
(leader, fenced) writes the request of a VNF's stitched virtual link, and everything else: the
allocation, the effective MTU, the state and, for a refusal, the reason and its HTTP
status. A refused network is ``FAILED`` and holds nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from broker.models.objects import Stored


class NetworkState(enum.StrEnum):
    PENDING = "PENDING"  # asked for; the leader has not allocated yet
    PROVISIONING = "PROVISIONING"  # allocated; member sites are building it
    READY = "READY"  # every member site reports it built
    DEGRADED = "DEGRADED"  # a member site failed to build it (``reason``)
    FAILED = "FAILED"  # refused: nothing allocated (``reason``, ``status``)
    DELETING = "DELETING"


@dataclass(frozen=True, slots=True)
class NetworkRecord(Stored):
    id: str
    tenant: str
    type: str
    sites: tuple[str, ...]
    cidr: str = ""
    """As asked: "" (default size), "/N" or a block."""
    mtu: int = 0
    """As asked; 0 = the largest every member's tunnel carries."""
    state: NetworkState = NetworkState.PENDING
    reason: str = ""
    status: int = 0
    """For FAILED: the HTTP status the refusal maps to (409 allocation, 422 input)."""
    allocation: dict[str, Any] = field(default_factory=dict)
    effective_mtu: int = 0
    segments: tuple[dict[str, Any], ...] = ()
    """Per member site: subnet, gateway, pool, DHCP range, the gateway's address."""
    verify_nonce: str = ""
    vnfs: tuple[str, ...] = ()
    """The VNFs whose members attach to it: a stitched virtual link's network names its VNF,
    which owns it (created when the VNF is placed, deleted when the VNF is gone)."""
    ports: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per member site: the VNFs' ports attached to the network there."""
    deleted: bool = False
    created_ms: int = 0
    updated_ms: int = 0
