"""The real ``Store`` on the event loop: etcd v3 over grpc.aio, no thread hop per call.

Selected by ``etcd.client = "async"``; the threaded ``etcd`` client is the default
(docs/design-seams.md says why, and when that changes).
Invariant 1 (etcd is the only state) rests on this module as on ``etcd``: every piece of
broker state goes through it, under one root prefix, and nothing here caches.

How it is built, and why:

- One grpc.aio channel per endpoint (TLS with the client certificate when ``ca_file``),
  opened on first use so it belongs to the loop that uses it, over the etcd v3 stubs and
  messages cslab-etcd3 ships (``etcd3.etcdrpc``); ``etcdwire`` holds the messages and the
  error translation both clients share. Every RPC carries the settings timeout as its
  gRPC deadline, and the await is bounded too, so no call hangs.
- Failover as in the threaded client: calls go to the endpoint in use; one that fails
  with ``StoreUnavailable`` moves the store to the next endpoint. Reads and lease calls
  are retried once per endpoint within the call; writes are not (a write that timed out
  may have landed, and only the caller knows whether repeating it is safe). Calls fail
  fast while an endpoint is down (no wait-for-ready): etcd down is ``StoreUnavailable``
  at once, and the reconnect backoff is capped at one second.
- Leases are kept alive as the threaded client keeps them: ``keepalive.Keeper`` refreshes
  each lease the loop asks about on a thread of its own, over a small synchronous
  channel used for nothing else, so a lagging event loop still keeps its leases.
- Each watch is one Watch stream of its own on the endpoint in use. A compacted start
  revision, a cancelled watch or a broken stream ends the iterator with
  ``StoreUnavailable``; closing the iterator cancels the stream.
- A call the store's own ``close`` cancelled ends with ``StoreUnavailable``, never with a
  ``CancelledError`` the caller's task did not ask for.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio
from etcd3 import etcdrpc
from etcd3.etcdrpc import kv_pb2, rpc_pb2_grpc

from broker import errors
from broker.settings import EtcdSettings
from broker.store import etcdwire, keepalive
from broker.store import protocol as p
from broker.store.etcdwire import translate

log = logging.getLogger(__name__)

T = TypeVar("T")
_DELETE = kv_pb2.Event.DELETE
# gRPC core reads grpc.min_reconnect_backoff_ms as the minimum time a connection attempt
# may take (handshake included): at 100 ms a loaded machine fails first connects
# ("timed out before receiving SETTINGS frame"). Here it stays at gRPC's 20 s; reconnects
# stay fast (initial 100 ms, at most 1 s apart) and a refused connection fails at once.
_OPTIONS = [o for o in etcdwire.CHANNEL_OPTIONS if o[0] != "grpc.min_reconnect_backoff_ms"]


class _Stubs:
    """The stubs of one endpoint's channel."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.kv = rpc_pb2_grpc.KVStub(channel)
        self.lease = rpc_pb2_grpc.LeaseStub(channel)
        self.watch = rpc_pb2_grpc.WatchStub(channel)


class AsyncEtcdStore:
    """``Store`` over etcd v3 with grpc.aio. Create with ``from_settings``; ``close``."""

    def __init__(self, settings: EtcdSettings) -> None:
        self._hosts = [f"{host}:{port}" for host, port in etcdwire.check(settings)]
        self._creds = None
        if settings.ca_file:
            ca, key, cert = etcdwire.read_tls(settings)
            self._creds = grpc.ssl_channel_credentials(ca, key, cert)
        self._settings = settings
        self._codec = etcdwire.Codec(settings.root)
        self._channels: dict[int, _Stubs] = {}
        self._sync: dict[int, Any] = {}  # the keeper's synchronous channels
        self._current = 0
        self._closed = False
        self._keeper = keepalive.Keeper(self._refresh_now)
        self._watch_tokens = itertools.count(1)
        self._watches: dict[int, Any] = {}

    @classmethod
    def from_settings(cls, settings: EtcdSettings) -> AsyncEtcdStore:
        return cls(settings)

    # -- introspection (tests, diagnostics) ---------------------------------------------

    @property
    def endpoint_in_use(self) -> str:
        """host:port of the member the client currently talks to."""
        return self._hosts[self._current]

    @property
    def active_watches(self) -> int:
        return len(self._watches)

    # -- plumbing -----------------------------------------------------------------------

    def _stubs(self, index: int) -> _Stubs:
        stubs = self._channels.get(index)
        if stubs is None:
            target, options = self._hosts[index], _OPTIONS
            if self._creds is not None:
                channel = grpc.aio.secure_channel(target, self._creds, options=options)
            else:
                channel = grpc.aio.insecure_channel(target, options=options)
            stubs = self._channels[index] = _Stubs(channel)
        return stubs

    def _failed(self, index: int) -> None:
        """The endpoint at ``index`` failed: the next call goes to the next one."""
        if len(self._hosts) > 1 and self._current == index:
            self._current = (index + 1) % len(self._hosts)
            log.info("etcd endpoint %s failed; now using %s", self._hosts[index],
                     self._hosts[self._current])

    def _refuse_closed(self, what: str) -> None:
        if self._closed:
            raise errors.StoreUnavailable(f"{what}: the store is closed", retry_after=0.0)

    async def _call(
        self, what: str, rpc: Callable[[_Stubs], Awaitable[T]], *, retry: bool = False
    ) -> T:
        """Run ``rpc`` on the endpoint in use; translate what it raises; retry reads on
        the next endpoint."""
        self._refuse_closed(what)
        attempts = len(self._hosts) if retry else 1
        for attempt in range(attempts):
            index = self._current
            try:
                # The RPC has its own deadline; this bound only guards a stuck call.
                async with asyncio.timeout(self._settings.timeout + 1.0):
                    return await rpc(self._stubs(index))
            except asyncio.CancelledError as exc:
                raise self._cancelled(what, exc) from exc
            except Exception as exc:
                error = translate(exc, what)
                if isinstance(error, errors.StoreUnavailable):
                    self._failed(index)
                if attempt == attempts - 1 or not isinstance(error, errors.StoreUnavailable):
                    raise error from exc
                log.info("%s failed on one endpoint, trying another: %s", what, error)
        raise AssertionError("unreachable")  # pragma: no cover

    def _cancelled(self, what: str, exc: asyncio.CancelledError) -> BaseException:
        """Our own ``close`` cancelled the call: ``StoreUnavailable``; else re-raise."""
        task = asyncio.current_task()
        if self._closed and task is not None and not task.cancelling():
            return errors.StoreUnavailable(f"{what}: the store is closed", retry_after=0.0)
        return exc

    # -- keys ---------------------------------------------------------------------------

    async def _range(self, what: str, request: Any) -> Any:
        timeout = self._settings.timeout
        return await self._call(what, lambda s: s.kv.Range(request, timeout=timeout), retry=True)

    async def get(self, key: str) -> p.KeyValue | None:
        response = await self._range(f"get {key}", etcdrpc.RangeRequest(key=self._codec.key(key)))
        return self._codec.kv(response.kvs[0]) if response.kvs else None

    async def get_prefix(self, prefix: str) -> tuple[list[p.KeyValue], int]:
        what = f"get prefix {prefix}"
        return await self._codec.list_prefix(prefix, lambda r: self._range(what, r))

    async def get_range(
        self, prefix: str, *, after: str = "", before: str = "", limit: int = 0,
        descending: bool = False,
    ) -> tuple[list[p.KeyValue], int, int]:
        """See ``Store.get_range``."""
        request = self._codec.range_request(
            prefix, after=after, before=before, limit=limit, descending=descending
        )
        response = await self._range(f"get range {prefix}", request)
        kvs = [self._codec.kv(kv) for kv in response.kvs]
        return kvs, int(response.header.revision), int(response.count)

    async def compact(self, revision: int) -> None:
        """Drop etcd's history before ``revision`` (operations and tests); watches from an
        older revision then fail with ``StoreUnavailable``."""
        request = etcdrpc.CompactionRequest(revision=revision)
        timeout = self._settings.timeout
        await self._call(f"compact {revision}", lambda s: s.kv.Compact(request, timeout=timeout))

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        request = etcdrpc.PutRequest(key=self._codec.key(key), value=value, lease=lease)
        timeout = self._settings.timeout
        response = await self._call(f"put {key}", lambda s: s.kv.Put(request, timeout=timeout))
        return int(response.header.revision)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        request = etcdrpc.DeleteRangeRequest(
            key=self._codec.key(key), range_end=self._codec.prefix_end(key) if prefix else b""
        )
        what = f"delete prefix {key}" if prefix else f"delete {key}"
        timeout = self._settings.timeout
        response = await self._call(what, lambda s: s.kv.DeleteRange(request, timeout=timeout))
        return int(response.deleted)

    async def txn(
        self, compares: Sequence[p.Compare], success: Sequence[p.TxnOp],
        failure: Sequence[p.TxnOp] = (),
    ) -> p.TxnResult:
        """See ``Store.txn``."""
        request = self._codec.txn_request(compares, success, failure)
        timeout = self._settings.timeout
        response = await self._call("txn", lambda s: s.kv.Txn(request, timeout=timeout))
        return self._codec.txn_result(response)

    # -- leases -------------------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> p.Lease:
        request = etcdrpc.LeaseGrantRequest(TTL=ttl)
        timeout = self._settings.timeout
        sent = time.monotonic()
        response = await self._call(
            "grant lease", lambda s: s.lease.LeaseGrant(request, timeout=timeout), retry=True
        )
        if response.error:
            raise errors.StoreUnavailable(f"grant lease: etcd answered {response.error}")
        lease = p.Lease(id=int(response.ID), ttl=int(response.TTL))
        self._keeper.keep(lease.id, lease.ttl, sent)  # kept from birth: see keepalive.py
        return lease

    async def _keepalive_once(self, stubs: _Stubs, lease_id: int) -> int:
        call = stubs.lease.LeaseKeepAlive(timeout=self._settings.timeout)
        try:
            await call.write(etcdrpc.LeaseKeepAliveRequest(ID=lease_id))
            response = await call.read()
        finally:
            call.cancel()
        if response is grpc.aio.EOF:
            raise errors.StoreUnavailable(f"refresh lease {lease_id:x}: the stream ended")
        return int(response.TTL)

    def _sync_lease_stub(self) -> Any:
        """The keeper thread's LeaseStub on the endpoint in use (a synchronous channel)."""
        index = self._current
        channel = self._sync.get(index)
        if channel is None:
            target, options = self._hosts[index], _OPTIONS
            if self._creds is not None:
                channel = grpc.secure_channel(target, self._creds, options=options)
            else:
                channel = grpc.insecure_channel(target, options=options)
            self._sync[index] = channel
        return rpc_pb2_grpc.LeaseStub(channel)

    def _refresh_now(self, lease_id: int) -> int:
        """One keepalive, on the calling (keeper) thread: the TTL, or ``keepalive.Gone``."""

        def ask() -> int:
            request = etcdrpc.LeaseKeepAliveRequest(ID=lease_id)
            try:
                responses = self._sync_lease_stub().LeaseKeepAlive(
                    iter([request]), timeout=self._settings.timeout
                )
                ttl = int(next(responses).TTL)
                responses.cancel()
            except Exception as exc:
                raise translate(exc, f"refresh lease {lease_id:x}") from exc
            return ttl

        return keepalive.refresh_now(lease_id, ask)

    async def refresh_lease(self, lease_id: int) -> int:
        what = f"refresh lease {lease_id:x}"
        return await keepalive.refresh(
            self._keeper,
            lease_id,
            lambda: self._call(what, lambda s: self._keepalive_once(s, lease_id), retry=True),
        )

    async def revoke_lease(self, lease_id: int) -> None:
        """Revoke the lease (deleting its keys); a lease already gone is not an error."""
        self._keeper.forget(lease_id)
        request = etcdrpc.LeaseRevokeRequest(ID=lease_id)
        timeout = self._settings.timeout
        try:
            await self._call(
                f"revoke lease {lease_id:x}",
                lambda s: s.lease.LeaseRevoke(request, timeout=timeout),
                retry=True,
            )
        except errors.LeaseExpired:
            pass

    # -- watches ------------------------------------------------------------------------

    def _events(self, response: Any) -> list[p.WatchEvent]:
        return [self._codec.event(e.type == _DELETE, e.kv) for e in response.events]

    async def _open_watch(self, prefix: str, start_revision: int | None) -> Any:
        """A Watch stream on the endpoint in use, created (etcd said so) or raising."""

        async def create(stubs: _Stubs) -> Any:
            request = etcdrpc.WatchCreateRequest(
                key=self._codec.key(prefix),
                range_end=self._codec.prefix_end(prefix),
                start_revision=start_revision or 0,
            )
            call = stubs.watch.Watch()
            try:
                await call.write(etcdrpc.WatchRequest(create_request=request))
                async with asyncio.timeout(self._settings.timeout):
                    created = await call.read()
                if created is grpc.aio.EOF or not created.created:
                    raise errors.StoreUnavailable(f"watch {prefix}: etcd did not create it")
                self._check(prefix, created)
            except BaseException:
                call.cancel()
                raise
            return call

        return await self._call(f"watch {prefix}", create)

    @staticmethod
    def _check(prefix: str, response: Any) -> None:
        """Raise ``StoreUnavailable`` if etcd compacted or cancelled the watch."""
        if response.compact_revision:
            raise etcdwire.compacted(f"watch {prefix}", int(response.compact_revision))
        if response.canceled:
            reason = response.cancel_reason or "cancelled by etcd"
            raise errors.StoreUnavailable(f"watch {prefix}: {reason}", retry_after=0.1)

    async def watch_prefix(
        self, prefix: str, *, start_revision: int | None = None
    ) -> AsyncGenerator[p.WatchEvent, None]:
        """See ``Store.watch_prefix``; as in ``EtcdStore``, the watch starts when the
        iteration does."""
        call = await self._open_watch(prefix, start_revision)
        token = next(self._watch_tokens)
        self._watches[token] = call
        try:
            while True:
                response = await self._next_response(prefix, call)
                for event in self._events(response):
                    yield event
        finally:
            self._watches.pop(token, None)
            call.cancel()

    async def _next_response(self, prefix: str, call: Any) -> Any:
        what = f"watch {prefix}"
        try:
            response = await call.read()
        except asyncio.CancelledError as exc:
            raise self._cancelled(what, exc) from exc
        except Exception as exc:
            error = translate(exc, what)
            raise errors.StoreUnavailable(f"{what} broke: {error}", retry_after=0.1) from exc
        if response is grpc.aio.EOF:
            raise errors.StoreUnavailable(f"{what} broke: the stream ended", retry_after=0.1)
        self._check(prefix, response)
        return response

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._keeper.stop()
        for call in list(self._watches.values()):
            call.cancel()
        channels, self._channels = list(self._channels.values()), {}
        for stubs in channels:
            try:
                await stubs.channel.close()
            except Exception as exc:
                log.debug("closing an etcd channel: %s", exc)
        for channel in self._sync.values():
            channel.close()
        self._sync.clear()
