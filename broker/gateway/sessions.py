"""The agent sessions this replica holds, by site: one stream per site at most.

A newer stream for the same site replaces the older one (the agent reconnected); a
revoked certificate closes every stream that presented it — with a farewell: the
``Refusal`` saying why goes out in the stream before it ends, so the agent learns the
reason even when one of its writes races the end of the stream (grpc then turns the
agent's side of the call into INTERNAL "Internal error from Core", status and all).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from meridian.v1 import agent_pb2 as pb

from broker.gateway import convert
from broker.models import objects

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False, slots=True)
class Session:
    site: str
    session_id: str
    serial: int
    protocol: str
    agent_version: str
    connected_ms: int
    outbound: asyncio.Queue[pb.BrokerMessage | None] = dataclasses.field(
        default_factory=asyncio.Queue
    )
    sent_generations: dict[str, int] = dataclasses.field(default_factory=dict)
    closed_reason: str = ""
    status_value: bytes = b""  # the sitestatus value this session last wrote
    # digests (servicer.digest), not the values: a site's memory is not its inventory
    usage_digest: bytes = b""  # of the usage last queued for etcd (written only on change)
    usage_wire: bytes = b""  # the Usage message it came from, as received (small)
    inventory_digest: bytes = b""  # of the inventory last queued for etcd (written on change)
    # liveness, judged in memory by this replica (gateway/liveness.py)
    last_seen: float = dataclasses.field(default_factory=time.monotonic)
    seq: int = 0  # of the last heartbeat
    silent: bool = False  # as the site's status record says

    def heard_ms(self) -> int:
        """Wall-clock time of the last heartbeat (or of the opening), unix ms."""
        return int(time.time() * 1000 - (time.monotonic() - self.last_seen) * 1000)

    def push_desired(self, kind: str, name: str, value: objects.Desired) -> None:
        """Queue a desired object unless this stream already carried that generation."""
        ref = f"{kind}/{name}"
        if self.sent_generations.get(ref, -1) >= value.generation:
            return
        self.sent_generations[ref] = value.generation
        self.outbound.put_nowait(convert.desired_to_wire(kind, name, value))

    farewell: bool = False  # the last message out says why the stream ends

    def close(self, reason: str, refusal: pb.RefusalCode.ValueType | None = None) -> None:
        """End the stream; with ``refusal``, a ``Refusal`` naming ``reason`` goes first."""
        if not self.closed_reason:
            self.closed_reason = reason
            if refusal is not None:
                self.farewell = True
                self.outbound.put_nowait(
                    pb.BrokerMessage(refusal=pb.Refusal(code=refusal, reason=reason))
                )
            self.outbound.put_nowait(None)


class Registry:
    def __init__(self) -> None:
        self._by_site: dict[str, Session] = {}

    def add(self, session: Session) -> None:
        old = self._by_site.get(session.site)
        if old is not None:
            log.info("site %s reconnected: closing its older stream", session.site)
            old.close("replaced by a newer stream from the same site")
        self._by_site[session.site] = session

    def remove(self, session: Session) -> None:
        if self._by_site.get(session.site) is session:
            del self._by_site[session.site]

    def get(self, site: str) -> Session | None:
        return self._by_site.get(site)

    def all(self) -> list[Session]:
        return list(self._by_site.values())

    def close_serial(self, serial: int, reason: str) -> int:
        """Close every stream whose certificate has ``serial``; returns how many."""
        hit = [s for s in self._by_site.values() if s.serial == serial]
        for session in hit:
            session.close(reason, pb.REFUSAL_IDENTITY)
        return len(hit)

    def __len__(self) -> int:
        return len(self._by_site)
