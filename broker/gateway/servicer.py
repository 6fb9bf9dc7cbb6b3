"""The AgentGateway servicer: one coroutine per agent stream.

Order of a stream: admission (at most ``gateway.max_opening_streams`` open at once; the
rest have their Hello read and are refused as busy with a jittered ``retry_after_ms``) →
identify the peer by its certificate → read Hello (bounded wait) → negotiate the version
→ check the site is registered → record the live session and the inventory (one etcd
txn per batch of streams opening together, ``groupcommit.py``) → Welcome →
the desired snapshot (the admission place is freed here) → then heartbeats and statuses
up, desired objects down, until either side ends. A heartbeat is noted in memory and
acked; it writes nothing (``liveness.py`` judges silence here and writes only flips), and
its usage is written only when it differs from the last one. Every refusal is sent as a ``Refusal``
message and as the gRPC status (with ``retry_after_ms`` also as the
``meridian-retry-after-ms`` trailer), is counted, and writes nothing. Failing to reach
etcd never ends a stream: statuses wait in memory and are written when etcd answers
again -- by the stream's ``statuswriter.StatusWriter``, behind the reader, which never
waits for etcd (a heartbeat is heard however many statuses came before it). Nor does
losing the replica lease: a new one is taken and the live-session records are written
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from cryptography import x509
from meridian.v1 import agent_pb2 as pb
from meridian.v1 import agent_pb2_grpc as pb_grpc

from broker import errors
from broker.gateway import convert, datapathevents, groupcommit, liveness, statuswriter, version
from broker.gateway import quarantine
from broker.gateway.admission import Admission, Ticket
from broker.gateway import feeds
from broker.gateway.feeds import DesiredFeed, RegisteredSites, ReplicaLease, Revocations
from broker.gateway.quarantine import Quarantines
from broker.gateway.sessions import Registry, Session
from broker.models import codec, objects
from broker.pki import identity
from broker.settings import BrokerSettings
from broker.store import keys, urgency
from broker.store.protocol import Compare, Delete, Op, Put, Store, Target

log = logging.getLogger(__name__)

GRPC_CODE = {
    pb.REFUSAL_UNSUPPORTED_VERSION: grpc.StatusCode.FAILED_PRECONDITION,
    pb.REFUSAL_IDENTITY: grpc.StatusCode.PERMISSION_DENIED,
    pb.REFUSAL_UNKNOWN_SITE: grpc.StatusCode.NOT_FOUND,
    pb.REFUSAL_MALFORMED: grpc.StatusCode.INVALID_ARGUMENT,
    pb.REFUSAL_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}

# Trailing metadata of a refused stream's status: the Refusal's retry_after_ms again.
RETRY_AFTER_MS = "meridian-retry-after-ms"
HELLO_DRAIN = 2.0  # seconds to wait for the Hello of a stream refused before reading it
FAREWELL_WAIT = 2.0  # seconds a closing stream waits for the agent to end it after the farewell


def now_ms() -> int:
    return int(time.time() * 1000)


def _owner(session: Session) -> Compare:
    """Holds while the site's ``sitestatus`` record is still the one ``session`` wrote."""
    return Compare(keys.sitestatus(session.site), Target.VALUE, Op.EQUAL, session.status_value)


def digest(value: bytes) -> bytes:
    """What a session keeps of a value it wrote, to tell a change: 16 bytes, not the value."""
    return hashlib.blake2b(value, digest_size=16).digest()


class Refused(Exception):
    def __init__(
        self, code: pb.RefusalCode.ValueType, reason: str, retry_after_ms: int = 0
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.retry_after_ms = retry_after_ms


class Gateway(pb_grpc.AgentGatewayServicer):
    def __init__(
        self,
        store: Store,
        settings: BrokerSettings,
        registry: Registry,
        lease: ReplicaLease,
        revocations: Revocations,
        quarantines: Quarantines | None = None,
        sites: RegisteredSites | None = None,
        desired: DesiredFeed | None = None,
    ) -> None:
        self.store = store
        self.sites = sites
        self.desired = desired
        self.settings = settings
        self.registry = registry
        self.lease = lease
        self.revocations = revocations
        self.quarantines = quarantines
        self.refusals: dict[str, int] = {}
        gw = settings.gateway
        self.admission = Admission(
            gw.max_opening_streams, gw.busy_retry_after, gw.busy_retry_after_max
        )
        self.commits = groupcommit.GroupCommit(store, lease)
        self.liveness = liveness.Liveness(store, settings, registry, lease, self._clear_status)
        lease.on_renewed(self.liveness.owe_records)

    # grpc.aio accepts a coroutine that reads and writes through the context; the stub's
    # signature only knows the iterator style.
    async def Connect(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[pb.AgentMessage],
        context: grpc.aio.ServicerContext[pb.AgentMessage, pb.BrokerMessage],
    ) -> None:
        ticket = self.admission.enter()
        if ticket is None:
            await self._drain_hello(context)
            await self._refuse(context, self._busy(), quiet=True)
            return
        try:
            try:
                # the Hello (the site's whole inventory) is not kept for the stream's life:
                # only the generations it carried
                session, observed = await self._open(context)
            except Refused as refused:
                ticket.done(opened=False)
                await self._refuse(context, refused)
                return
            try:
                await self._serve(context, session, observed, ticket)
            finally:
                self.registry.remove(session)
                self.liveness.forget(session)
                await self._clear_status(session)
                reason = session.closed_reason or "ended"
                log.info("site %s: stream closed (%s)", session.site, reason)
        finally:
            ticket.done(opened=False)

    async def _drain_hello(
        self, context: grpc.aio.ServicerContext[pb.AgentMessage, pb.BrokerMessage]
    ) -> None:
        """Read (and drop) the Hello of a stream about to be refused before reading it.

        Refused before its Hello is out, the agent's write fails, and grpc then reports
        INTERNAL in place of the refusal and its retry delay."""
        with contextlib.suppress(Exception):  # gone or silent: refused all the same
            async with asyncio.timeout(min(HELLO_DRAIN, self.settings.gateway.hello_timeout)):
                await context.read()

    def _busy(self) -> Refused:
        delay = self.admission.retry_after()
        return Refused(
            pb.REFUSAL_UNAVAILABLE,
            f"replica {self.settings.name} is busy opening {self.admission.opening} streams "
            f"(gateway.max_opening_streams): retry in {delay:.1f}s",
            max(1, int(delay * 1000)),
        )

    # -- opening ---------------------------------------------------------------------

    def _identify(self, context: grpc.aio.ServicerContext[Any, Any]) -> tuple[str, int]:
        pems = context.auth_context().get("x509_pem_cert")
        if not pems:
            raise Refused(pb.REFUSAL_IDENTITY, "no client certificate was presented")
        try:
            cert = x509.load_pem_x509_certificate(pems[0])
            site = identity.site_from_certificate(cert, self.settings.tls.trust_domain)
        except errors.BrokerError as exc:
            raise Refused(pb.REFUSAL_IDENTITY, str(exc)) from exc
        except ValueError as exc:
            raise Refused(pb.REFUSAL_IDENTITY, f"unreadable client certificate: {exc}") from exc
        serial = cert.serial_number
        if self.revocations.is_revoked(serial):
            raise Refused(
                pb.REFUSAL_IDENTITY,
                f"certificate {serial:x} of site {site} is revoked: issue a new one "
                "(meridian pki issue-site) and restart the agent",
            )
        return site, serial

    async def _open(
        self, context: grpc.aio.ServicerContext[pb.AgentMessage, pb.BrokerMessage]
    ) -> tuple[Session, dict[str, int]]:
        try:
            site, serial = self._identify(context)
        except Refused:
            await self._drain_hello(context)
            raise
        try:
            first = await asyncio.wait_for(context.read(), self.settings.gateway.hello_timeout)
        except TimeoutError as exc:
            raise Refused(pb.REFUSAL_MALFORMED, "no Hello within the hello timeout") from exc
        if first is grpc.aio.EOF or not isinstance(first, pb.AgentMessage):
            raise Refused(pb.REFUSAL_MALFORMED, "stream ended before Hello")
        if first.WhichOneof("body") != "hello":
            raise Refused(pb.REFUSAL_MALFORMED, "the first message of a stream must be Hello")
        hello = first.hello
        agreed = version.negotiate(version.Version(hello.version.major, hello.version.minor))
        if isinstance(agreed, str):
            raise Refused(pb.REFUSAL_UNSUPPORTED_VERSION, agreed)
        if hello.site_id != site:
            raise Refused(
                pb.REFUSAL_IDENTITY,
                f"certificate names site {site!r} but Hello claims {hello.site_id!r}: "
                "a site may speak only for itself",
            )
        why = self.quarantines.reason(site) if self.quarantines is not None else ""
        if why:
            raise Refused(pb.REFUSAL_UNAVAILABLE, why, quarantine.RETRY_AFTER_MS)
        if not await self._registered(site):
            raise Refused(
                pb.REFUSAL_UNKNOWN_SITE,
                f"site {site!r} is not registered: meridian sites register {site} --region ...",
                5000,
            )
        session = Session(
            site=site,
            session_id=uuid.uuid4().hex,
            serial=serial,
            protocol=str(agreed),
            agent_version=hello.agent_version,
            connected_ms=now_ms(),
        )
        inventory = convert.inventory_from_wire(site, hello.inventory)
        value = codec.encode(inventory)
        session.inventory_digest = digest(value)
        try:
            await self._write_status(session, [Put(keys.inventory(site), value)])
        except (errors.StoreUnavailable, errors.LeaseExpired) as exc:
            raise Refused(pb.REFUSAL_UNAVAILABLE, f"state store unreachable: {exc}", 2000) from exc
        self.registry.add(session)
        self.liveness.track(session)
        log.info("site %s: connected (protocol %s, session %s)", site, agreed, session.session_id)
        return session, dict(hello.observed)

    async def _registered(self, site: str) -> bool:
        """From the followed registry when it knows the site, else from etcd."""
        if self.sites is not None and self.sites.surely(site):
            return True
        try:
            return await self.store.get(keys.site(site)) is not None
        except errors.StoreUnavailable as exc:
            raise Refused(pb.REFUSAL_UNAVAILABLE, f"state store unreachable: {exc}", 2000) from exc

    async def _refuse(
        self,
        context: grpc.aio.ServicerContext[pb.AgentMessage, pb.BrokerMessage],
        refused: Refused,
        *,
        quiet: bool = False,
    ) -> None:
        """Send the refusal and end the stream; ``quiet``: busy, counted, logged at debug."""
        name = "BUSY" if quiet else pb.RefusalCode.Name(refused.code)
        self.refusals[name] = self.refusals.get(name, 0) + 1
        level = logging.DEBUG if quiet else logging.WARNING
        log.log(level, "agent %s refused (%s): %s", context.peer(), name, refused.reason)
        msg = pb.BrokerMessage(
            refusal=pb.Refusal(
                code=refused.code, reason=refused.reason, retry_after_ms=refused.retry_after_ms
            )
        )
        try:
            await context.write(msg)
        except Exception:
            log.debug("could not deliver the refusal message", exc_info=True)
        # The delay rides on the status too: a refusal sent before the agent's Hello has
        # gone out fails the agent's write, and the agent then sees only the status.
        trailers = (
            ((RETRY_AFTER_MS, str(refused.retry_after_ms)),) if refused.retry_after_ms else ()
        )
        await context.abort(GRPC_CODE[refused.code], refused.reason, trailing_metadata=trailers)

    # -- serving ---------------------------------------------------------------------

    async def _serve(
        self,
        context: grpc.aio.ServicerContext[pb.AgentMessage, pb.BrokerMessage],
        session: Session,
        observed: dict[str, int],
        ticket: Ticket,
    ) -> None:
        interval_ms = int(self.settings.gateway.heartbeat_interval * 1000)
        major, minor = (int(p) for p in session.protocol.split("."))
        await context.write(
            pb.BrokerMessage(
                welcome=pb.Welcome(
                    session_id=session.session_id,
                    version=pb.ProtocolVersion(major=major, minor=minor),
                    heartbeat_interval_ms=interval_ms,
                    replica=self.settings.name,
                )
            )
        )
        session.sent_generations.update(observed)
        writer = statuswriter.StatusWriter(self.store)
        reader = asyncio.create_task(
            self._read(context, session, writer), name=f"read-{session.site}"
        )
        writing = asyncio.create_task(writer.run(), name=f"write-{session.site}")
        try:
            await self._send_snapshot(session)
            ticket.done(opened=True)
            while (msg := await session.outbound.get()) is not None:
                await context.write(msg)
            if session.farewell:
                # the agent reads the farewell and ends the call itself; until it does, its
                # writes still land (and are dropped), so none of them races our status
                await asyncio.wait({reader}, timeout=FAREWELL_WAIT)
        finally:
            reader.cancel()
            writing.cancel()
            await writer.close(_owner(session))
        if session.closed_reason and not context.done():
            await context.abort(grpc.StatusCode.UNAVAILABLE, session.closed_reason)

    async def _send_snapshot(self, session: Session) -> None:
        if self.desired is not None and not self.desired.may_have(session.site):
            return  # nothing desired for the site; what comes later the feed routes
        try:
            kvs, _ = await self.store.get_prefix(keys.desired(session.site))
        except errors.StoreUnavailable:
            log.warning("site %s: desired snapshot postponed (etcd unreachable)", session.site)
            return
        for kv in kvs:
            _, kind, name = keys.split_object(kv.key)
            feeds.push(session, kv.key, kind, name, kv.value)

    async def _read(
        self,
        context: grpc.aio.ServicerContext[pb.AgentMessage, pb.BrokerMessage],
        session: Session,
        writer: statuswriter.StatusWriter,
    ) -> None:
        """Read the agent's messages; what they report goes to ``writer`` (this loop never
        waits for etcd, so a heartbeat is heard however many statuses came first)."""
        try:
            while True:
                msg = await context.read()
                if msg is grpc.aio.EOF or not isinstance(msg, pb.AgentMessage):
                    session.close("agent closed the stream")
                    return
                if session.closed_reason:
                    continue  # closing (a revoked certificate): read, never act on it
                body = msg.WhichOneof("body")
                if body == "heartbeat":
                    self._heartbeat(session, msg.heartbeat, writer)
                elif body == "status":
                    await self._status(session, msg.status, writer)
                elif body == "inventory":
                    inventory = convert.inventory_from_wire(session.site, msg.inventory)
                    value = codec.encode(inventory)
                    if digest(value) != session.inventory_digest:  # written only on change
                        session.inventory_digest = digest(value)
                        writer.add(keys.inventory(session.site), value)
                else:
                    session.close(f"protocol violation: unexpected {body or 'empty'} message")
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            session.close(f"stream broke: {exc}")

    async def _status(
        self, session: Session, st: pb.ObjectStatus, writer: statuswriter.StatusWriter
    ) -> None:
        """Queue an object status for ``observed/``: only agent object kinds, so an agent
        can never write into another feature's key space (invariant 13). Its event (if
        any) only when the status tells something the last one did not (a replay)."""
        if not objects.agent_kind(st.kind) or not st.name or "/" in st.name:
            log.warning(
                "site %s: status for %r/%r dropped: not an agent object kind/name",
                session.site,
                st.kind,
                st.name,
            )
            return
        key = keys.observed(session.site, st.kind, st.name)
        event = datapathevents.event_for(session.site, st)
        if event is not None and not await datapathevents.already_told(
            self.store, key, st, writer.pending
        ):
            writer.add(keys.event(event.id), codec.encode(event))
        writer.add(key, convert.status_from_wire(st, now_ms()).encode())

    def _heartbeat(
        self, session: Session, hb: pb.Heartbeat, writer: statuswriter.StatusWriter
    ) -> None:
        self.liveness.heard(session, hb.seq)
        if hb.HasField("usage"):
            # compare the wire bytes first: a usage that did not change is not decoded
            wire = hb.usage.SerializeToString(deterministic=True)
            if wire != session.usage_wire:
                session.usage_wire = wire
                usage = json.dumps(convert.usage_from_wire(hb.usage), sort_keys=True).encode()
                if digest(usage) != session.usage_digest:
                    writer.add(keys.usage(session.site), usage)
                    session.usage_digest = digest(usage)
        if writer.pending:  # statuses still waiting (for etcd): try again now
            writer.wake.set()
        session.outbound.put_nowait(pb.BrokerMessage(heartbeat_ack=pb.HeartbeatAck(seq=hb.seq)))

    async def _write_status(self, session: Session, extra: list[Put]) -> None:
        """The session's opening record (and ``extra``) under the replica's lease, in
        one batch with the other streams opening now (``groupcommit.py``)."""
        value = liveness.record(session, self.settings.name)
        key = keys.sitestatus(session.site)
        await self.commits.write(
            [key, *(put.key for put in extra)], lambda lease_id: [Put(key, value, lease_id), *extra]
        )
        session.status_value = value

    async def _clear_status(self, session: Session) -> None:
        """Delete the site's live-session record, if it is still this session's."""
        if not session.status_value:
            return
        key = keys.sitestatus(session.site)
        try:
            with urgency.urgent():  # the leader judges the site DOWN on this delete
                await self.store.txn(
                    [Compare(key, Target.VALUE, Op.EQUAL, session.status_value)], [Delete(key)]
                )
        except errors.StoreUnavailable:
            log.warning("site %s: status not cleared yet (etcd unreachable); retried", session.site)
            self.liveness.owe_clear(session)
