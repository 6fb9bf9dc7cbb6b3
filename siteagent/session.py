"""The agent's one stream to the broker: connect, hello, heartbeat, resume.

The agent dials out (edge sites sit behind NAT) over mutual TLS. A stream lives until
either side ends it or no heartbeat ack arrives for ``missed_acks`` intervals; the agent
then reconnects with jittered exponential backoff, moving to the next broker replica, and
resumes: Hello carries the generations it has already converged, so the broker re-sends
only what is newer (and a re-sent object is harmless anyway — invariant 4).

Refusals for identity or version are permanent: the agent stops and says what to fix.
An unknown site or an unavailable (or busy) broker is retried after the delay the broker
names, stretched by up to ``JITTER`` of itself so agents refused together come back
apart. Reaching Welcome has a generous bound (``connect_timeout``, also jittered): under
a connect storm a slow TLS handshake is normal, and abandoning it only makes the storm
come back. A timeout is the only sign a saturated broker gives, so it is read as a busy
refusal with no delay named: while attempts keep running out of time, each next bound
doubles (up to ``connect_timeout_max``) and so does the cap of the full-jitter delay
before it (past ``backoff_max``, up to ``timeout_backoff_max``) -- a herd that timed out
together comes back spread over minutes, not as the same herd five seconds later.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import meridian.v1 as wirever
from meridian.v1 import agent_pb2 as pb
from meridian.v1 import agent_pb2_grpc as pb_grpc

from siteagent import errors, wire
from siteagent.drivers.base import Driver
from siteagent.reconciler import Reconciler
from siteagent.settings import AgentSettings, SessionSettings

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"
PERMANENT = {pb.REFUSAL_IDENTITY, pb.REFUSAL_UNSUPPORTED_VERSION, pb.REFUSAL_MALFORMED}
JITTER = 0.25  # a retry_after or connect timeout is stretched by up to this fraction
# The broker repeats a refusal's retry_after_ms in this trailer of the stream's status: a
# busy replica may refuse before Hello is written, and then only the status arrives.
RETRY_AFTER_MS = "meridian-retry-after-ms"


@dataclass
class SessionStats:
    """What the session has seen; read by tests and the fan-in benchmark."""

    connects: int = 0
    welcomed: int = 0
    refused: int = 0
    timeouts: int = 0
    replica: str = ""
    session_id: str = ""
    acked: int = 0
    lags_ms: list[float] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)


def channel_credentials(settings: AgentSettings) -> grpc.ChannelCredentials:
    tls = settings.tls
    try:
        return grpc.ssl_channel_credentials(
            root_certificates=Path(tls.ca_file).read_bytes(),
            private_key=Path(tls.key_file).read_bytes(),
            certificate_chain=Path(tls.cert_file).read_bytes(),
        )
    except OSError as exc:
        raise errors.SettingsError([f"tls: cannot read {exc.filename}: {exc.strerror}"]) from exc


def retry_after(exc: grpc.aio.AioRpcError) -> float | None:
    """The delay (s) a refused stream's status names in its trailer, if any."""
    for key, value in exc.trailing_metadata() or ():
        if key == RETRY_AFTER_MS:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            try:
                ms = int(text)
            except ValueError:
                log.warning("ignoring a malformed %s trailer: %r", RETRY_AFTER_MS, text)
                return None
            return ms / 1000 if ms > 0 else None
    return None


def backoff(cfg: SessionSettings, failures: int, timeouts: int) -> float:
    """Seconds before the next attempt after ``failures`` failures in a row, the last
    ``timeouts`` of them timeouts: full jitter up to a cap doubled per failure, capped
    at ``backoff_max`` -- and, while attempts time out, beyond it up to
    ``timeout_backoff_max``."""
    cap = min(cfg.backoff_max, cfg.backoff_initial * 2 ** min(failures, 16))
    if timeouts:
        stretched = cfg.backoff_max * 2 ** min(timeouts - 1, 16)
        cap = max(cap, min(cfg.timeout_backoff_max, stretched))
    return random.uniform(min(cfg.backoff_initial / 2, cap), cap)


def connect_bound(cfg: SessionSettings, timeouts: int) -> float:
    """Seconds the next attempt may take to reach Welcome: ``connect_timeout`` doubled
    per timeout in a row, up to ``connect_timeout_max``, stretched by up to ``JITTER``."""
    base = min(cfg.connect_timeout_max, cfg.connect_timeout * 2 ** min(timeouts, 16))
    return float(base * random.uniform(1.0, 1.0 + JITTER))


class Session:
    def __init__(
        self,
        settings: AgentSettings,
        driver: Driver,
        reconciler: Reconciler,
        *,
        version: tuple[int, int] = (wirever.MAJOR, wirever.MINOR),
        credentials: grpc.ChannelCredentials | None = None,
        inventory_hook: Callable[[], Awaitable[pb.Inventory]] | None = None,
    ) -> None:
        self.settings = settings
        self.driver = driver
        self.reconciler = reconciler
        self.version = version
        self.stats = SessionStats()
        self._credentials = credentials or channel_credentials(settings)
        self._inventory_hook = inventory_hook
        self._inventory_dirty = asyncio.Event()
        brokers = settings.session.brokers
        # spread agents over replicas deterministically, then walk the list on failure
        self._next = zlib.crc32(settings.site_id.encode()) % len(brokers)
        self._silent = 0  # attempts in a row that ran out of time

    async def run(self) -> None:
        """Stay connected until cancelled; raises ``Refused`` on a permanent refusal."""
        cfg = self.settings.session
        failures = 0
        while True:
            broker = cfg.brokers[self._next % len(cfg.brokers)]
            delay: float | None = None
            welcomed = self.stats.welcomed
            try:
                await self._stream(broker)
                failures = 0
            except errors.Refused as refused:
                if refused.permanent:
                    raise
                self.stats.refused += 1
                self._silent = 0  # it answered: not saturated
                if refused.retry_after is not None:
                    delay = refused.retry_after * random.uniform(1.0, 1.0 + JITTER)
                log.warning("%s refused the stream: %s", broker, refused)
            except grpc.aio.AioRpcError as exc:
                named = retry_after(exc)
                if named is not None:
                    self.stats.refused += 1
                    delay = named * random.uniform(1.0, 1.0 + JITTER)
                log.warning("stream to %s ended: %s %s", broker, exc.code().name, exc.details())
            except TimeoutError:
                self.stats.timeouts += 1
                self._silent += 1
                log.warning("stream to %s: no Welcome in time", broker)
            except (errors.StreamLost, asyncio.InvalidStateError) as exc:
                # InvalidStateError: grpc's word for a write on a stream that already ended
                log.warning("stream to %s lost: %s", broker, exc)
            except errors.DriverError as exc:
                # the cloud failed the inventory for Hello: it may be back on the next try
                if not exc.temporary:
                    raise
                log.warning("cannot open a stream to %s: %s", broker, exc)
            self.stats.connected.clear()
            if self.stats.welcomed != welcomed:
                failures, self._silent = 0, 0  # the stream had opened: start afresh
            failures += 1
            self._next += 1
            if delay is None:
                delay = backoff(cfg, failures, self._silent)
            await asyncio.sleep(delay)

    def inventory_changed(self) -> None:
        """The site's inventory changed (a data path applied): send it again soon."""
        self._inventory_dirty.set()

    async def _inventory(self) -> pb.Inventory:
        if self._inventory_hook is not None:
            return await self._inventory_hook()
        return wire.inventory_to_wire(await self.driver.inventory())

    async def _hello(self) -> pb.AgentMessage:
        self._inventory_dirty.clear()  # Hello carries the inventory as of now
        inventory = await self._inventory()
        return pb.AgentMessage(
            hello=pb.Hello(
                site_id=self.settings.site_id,
                version=pb.ProtocolVersion(major=self.version[0], minor=self.version[1]),
                agent_version=AGENT_VERSION,
                inventory=inventory,
                observed=self.reconciler.snapshot(),
            )
        )

    async def _stream(self, broker: str) -> None:
        cfg = self.settings.session
        self.stats.connects += 1
        options = [("grpc.keepalive_time_ms", 10_000), ("grpc.use_local_subchannel_pool", 1)]
        bound = connect_bound(cfg, self._silent)
        hello = await self._hello()  # the site's own inventory: not the broker's time
        async with grpc.aio.secure_channel(broker, self._credentials, options=options) as channel:
            call = pb_grpc.AgentGatewayStub(channel).Connect()
            # the whole opening: TLS handshake, Hello written, Welcome (or Refusal) read
            async with asyncio.timeout(bound):
                await call.write(hello)
                first = await call.read()
            welcome = self._welcome(first)
            interval = max(welcome.heartbeat_interval_ms, 50) / 1000
            self.stats.welcomed += 1
            self.stats.replica = welcome.replica
            self.stats.session_id = welcome.session_id
            self.stats.connected.set()
            log.info(
                "connected to %s (replica %s, protocol %d.%d)",
                broker,
                welcome.replica,
                welcome.version.major,
                welcome.version.minor,
            )
            outbound: asyncio.Queue[pb.AgentMessage] = asyncio.Queue()
            sent: dict[int, float] = {}
            self.reconciler.replay()  # statuses sent on a broken stream may be lost
            tasks = [
                asyncio.create_task(self._write(call, outbound)),
                asyncio.create_task(self._heartbeat(outbound, sent, interval)),
                asyncio.create_task(self._forward_statuses(outbound)),
                asyncio.create_task(self._forward_inventory(outbound)),
                asyncio.create_task(self._read(call, sent, outbound)),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                # the reader first: what the broker said (a farewell Refusal and its reason)
                # beats a write that failed because the stream was ending
                for task in sorted(done, key=lambda t: t is not tasks[-1]):
                    task.result()
                raise errors.StreamLost("the broker ended the stream")
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def _welcome(self, first: object) -> pb.Welcome:
        if first is grpc.aio.EOF or not isinstance(first, pb.BrokerMessage):
            raise errors.StreamLost("the broker closed the stream before Welcome")
        body = first.WhichOneof("body")
        if body == "refusal":
            r = first.refusal
            raise errors.Refused(
                pb.RefusalCode.Name(r.code),
                r.reason,
                permanent=r.code in PERMANENT,
                retry_after=r.retry_after_ms / 1000 if r.retry_after_ms else None,
            )
        if body != "welcome":
            raise errors.StreamLost(f"expected Welcome, got {body}")
        return first.welcome

    @staticmethod
    async def _write(
        call: grpc.aio.StreamStreamCall[pb.AgentMessage, pb.BrokerMessage],
        outbound: asyncio.Queue[pb.AgentMessage],
    ) -> None:
        while True:
            message = await outbound.get()
            try:
                await call.write(message)
            except asyncio.InvalidStateError as exc:  # the RPC ended under the write
                raise errors.StreamLost("the stream ended while sending") from exc

    async def _heartbeat(
        self, outbound: asyncio.Queue[pb.AgentMessage], sent: dict[int, float], interval: float
    ) -> None:
        seq = 0
        while True:
            seq += 1
            usage: pb.Usage | None = None
            try:
                usage = wire.usage_to_wire(await self.driver.usage())
            except errors.SiteAgentError as exc:
                # a cloud that fails one listing must not end the session (nor stop the
                # heartbeats that keep the site UP): this beat goes without usage
                log.warning("usage not reported this heartbeat: %s", exc)
            sent[seq] = time.monotonic()
            outbound.put_nowait(
                pb.AgentMessage(
                    heartbeat=pb.Heartbeat(
                        seq=seq, sent_unix_ms=int(time.time() * 1000), usage=usage
                    )
                )
            )
            stale = [s for s in sent if s <= seq - self.settings.session.missed_acks]
            if stale:
                raise errors.StreamLost(f"no heartbeat ack for {len(stale)} intervals")
            await asyncio.sleep(interval)

    async def _forward_inventory(self, outbound: asyncio.Queue[pb.AgentMessage]) -> None:
        while True:
            await self._inventory_dirty.wait()
            self._inventory_dirty.clear()
            try:
                inventory = await self._inventory()
            except errors.SiteAgentError as exc:
                log.warning("changed inventory not sent: %s", exc)
                continue
            outbound.put_nowait(pb.AgentMessage(inventory=inventory))

    async def _forward_statuses(self, outbound: asyncio.Queue[pb.AgentMessage]) -> None:
        async for status in self.reconciler.statuses():
            outbound.put_nowait(pb.AgentMessage(status=wire.status_to_wire(status)))

    async def _read(
        self,
        call: grpc.aio.StreamStreamCall[pb.AgentMessage, pb.BrokerMessage],
        sent: dict[int, float],
        outbound: asyncio.Queue[pb.AgentMessage],
    ) -> None:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF or not isinstance(msg, pb.BrokerMessage):
                return
            body = msg.WhichOneof("body")
            if body == "desired":
                try:
                    obj = wire.desired_from_wire(msg.desired)
                except errors.InvalidSpec as exc:
                    outbound.put_nowait(wire.invalid_status(msg.desired, str(exc)))
                    continue
                await self.reconciler.submit(obj)
            elif body == "heartbeat_ack":
                started = sent.pop(msg.heartbeat_ack.seq, None)
                if started is not None:
                    self.stats.acked += 1
                    self.stats.lags_ms.append((time.monotonic() - started) * 1000)
                    del self.stats.lags_ms[:-1000]
            elif body == "refusal":
                raise errors.Refused(
                    pb.RefusalCode.Name(msg.refusal.code),
                    msg.refusal.reason,
                    permanent=msg.refusal.code in PERMANENT,
                    retry_after=msg.refusal.retry_after_ms / 1000 or None,
                )
