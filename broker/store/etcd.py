"""The real ``Store``: etcd v3 through the synchronous cslab-etcd3 client.

Invariant 1 (etcd is the only state) rests on this module: every piece of broker state
goes through it, under one root prefix (``EtcdSettings.root``), and nothing here caches.

How it is built, and why:

- The client is synchronous, so every call runs on a small dedicated thread pool
  (``EtcdSettings.threads``) and the event loop never blocks. Every RPC carries the
  settings timeout as its gRPC deadline, and the await is bounded too, so no call hangs.
- Urgent calls (``urgency.urgent()``: a DOWN verdict, a promotion, a lost stream's
  record) have a lane of their own too, ``URGENT_THREADS`` threads: restores and the
  controllers' reads filling the main pool's queue never delay them.
- Lease calls (grant, refresh, revoke) have a lane of their own: ``LEASE_THREADS``
  threads nothing else uses. A connect storm can fill the main pool's queue for seconds;
  an election or replica-lease keepalive queued behind it would miss its lease's TTL
  (the bound on the await counts queue time) and cost a leader term or every live
  session record. On the lane a keepalive waits only for other keepalives. Beyond that,
  a lease once refreshed is kept alive by ``keepalive.Keeper`` on its own thread while
  the loop keeps asking, and ``refresh_lease`` answers from the keeper's last success
  (see that module for when it may), so even a lagging event loop keeps its leases.
- ``MultiEndpointEtcd3Client`` with ``failover=True`` and ``time_retry=1``: a failed
  endpoint is skipped for one second, then tried again (the client's default of 300 s
  would strand a healthy cluster behind one timeout). With a single endpoint nothing is
  ever marked failed: there is nowhere to fail over to, and marking it would turn one slow
  call under load into a second in which every call -- lease keepalives included -- fails
  without being tried. Reads and lease calls are retried once per endpoint within the
  call; writes are not (a write that timed out may have landed, and only the caller knows
  whether repeating it is safe).
- gRPC reconnect backoff is capped at one second so a restarted etcd is used again at
  once instead of after the default exponential backoff (up to two minutes).
- Foreign exceptions become ``broker.errors`` at one boundary, ``etcdwire.translate``,
  shared with the asyncio client (``etcdaio``), as are the v3 messages (``etcdwire.Codec``).
- Watches run on the client's watch thread, each creation paired with its own answer
  (``etcdwatch``: the client's own pairing gave a creation that timed out a later
  watch's answer); its callbacks are bridged into the loop with
  ``call_soon_threadsafe`` onto an ``asyncio.Queue``. A broken watch stream ends the
  iterator with ``StoreUnavailable``; closing the iterator cancels the etcd watch --
  that watch only: a cancel is by identity, never by an id another stream reused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, TypeVar

import etcd3
import etcd3.events as etcd_events

from broker import errors
from broker.settings import EtcdSettings
from broker.store import etcdwatch, etcdwire, keepalive, urgency
from broker.store import protocol as p
from broker.store.etcdwire import grpc_status, translate

log = logging.getLogger(__name__)

T = TypeVar("T")

LEASE_THREADS = 2  # the election's keepalive and the replica lease's, side by side
URGENT_THREADS = 4  # a DOWN verdict's and the promotions' calls (``urgency``)


def _raw_txn(client: Any, request: Any) -> Any:
    """``Txn`` returning the whole response (the client's helper drops the header)."""
    return _raw(client, "Txn", request)


def _raw(client: Any, method: str, request: Any) -> Any:
    """One KV call by name (``Txn``, ``Range``) with the client's deadline and
    credentials, its errors handled as the client's own methods handle them."""
    try:
        return getattr(client.kvstub, method)(
            request,
            client.timeout,
            credentials=client.call_credentials,
            metadata=client.metadata,
        )
    except Exception as exc:
        if grpc_status(exc) is not None:
            # lets the client mark the endpoint failed (failover) and map the code,
            # exactly as its own decorated methods do
            client._manage_grpc_errors(exc)
        raise


def make_client(settings: EtcdSettings) -> Any:
    """A failover client over every endpoint in ``settings`` (TLS when ``ca_file``)."""
    hosts = etcdwire.check(settings)
    creds = None
    if settings.ca_file:
        try:
            creds = etcd3.MultiEndpointEtcd3Client.get_secure_creds(
                settings.ca_file, settings.key_file or None, settings.cert_file or None
            )
        except OSError as exc:
            problem = f"etcd: cannot read {exc.filename}: {exc.strerror}"
            raise errors.SettingsError([problem]) from exc
    time_retry = etcdwire.ENDPOINT_RETRY_SECONDS if len(settings.endpoints) > 1 else 0
    endpoints = [
        etcd3.Endpoint(
            host,
            port,
            secure=creds is not None,
            creds=creds,
            time_retry=time_retry,
            opts=etcdwire.CHANNEL_OPTIONS,
        )
        for host, port in hosts
    ]
    return etcd3.MultiEndpointEtcd3Client(
        endpoints=endpoints, timeout=settings.timeout, failover=True
    )


class EtcdStore:
    """``Store`` over etcd v3. Create with ``from_settings``; ``close`` when done."""

    def __init__(self, client: Any, settings: EtcdSettings) -> None:
        self._client = client
        client.get_watcher = functools.partial(etcdwatch.watcher_of, client)
        self._settings = settings
        self._codec = etcdwire.Codec(settings.root)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, settings.threads), thread_name_prefix="meridian-etcd"
        )
        self._lease_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=LEASE_THREADS, thread_name_prefix="meridian-etcd-lease"
        )
        self._urgent_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=URGENT_THREADS, thread_name_prefix="meridian-etcd-urgent"
        )
        self._keeper = keepalive.Keeper(self._refresh_now)
        self._closed = False
        self._watch_tokens = itertools.count(1)
        self._watches: set[int] = set()

    @classmethod
    def from_settings(cls, settings: EtcdSettings) -> EtcdStore:
        return cls(make_client(settings), settings)

    # -- introspection (tests, diagnostics) ---------------------------------------------

    @property
    def endpoint_in_use(self) -> str:
        """host:port of the member the client currently talks to."""
        return str(self._client.endpoint_in_use.netloc)

    @property
    def active_watches(self) -> int:
        return len(self._watches)

    # -- plumbing -----------------------------------------------------------------------

    def _key(self, key: str) -> bytes:
        return self._codec.key(key)

    async def _call(
        self, what: str, fn: Callable[[], T], *, retry: bool = False, lease: bool = False
    ) -> T:
        """Run ``fn`` on the pool (``lease``: on the lease lane); translate what it raises;
        retry reads on failover."""
        if self._closed:
            raise errors.StoreUnavailable(f"{what}: the store is closed", retry_after=0.0)
        loop = asyncio.get_running_loop()
        pool = self._lease_pool if lease else self._pool
        if not lease and urgency.URGENT.get():
            pool = self._urgent_pool
        attempts = len(self._settings.endpoints) if retry else 1
        for attempt in range(attempts):
            try:
                future = loop.run_in_executor(pool, fn)
                # The RPC has its own deadline; this bound only guards a stuck thread.
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancellation that races with the result (and a campaign would not stop).
                async with asyncio.timeout(self._settings.timeout + 1.0):
                    return await future
            except RuntimeError as exc:
                if self._closed:  # the pool was shut down under us
                    raise errors.StoreUnavailable(f"{what}: the store is closed") from exc
                raise translate(exc, what) from exc
            except Exception as exc:
                error = translate(exc, what)
                last = attempt == attempts - 1
                if last or not isinstance(error, errors.StoreUnavailable):
                    if error is exc:
                        raise
                    raise error from exc
                log.info("%s failed on one endpoint, trying another: %s", what, error)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- keys ---------------------------------------------------------------------------

    async def get(self, key: str) -> p.KeyValue | None:
        response = await self._call(
            f"get {key}", lambda: self._client.get_response(self._key(key)), retry=True
        )
        return self._codec.kv(response.kvs[0]) if response.kvs else None

    async def get_prefix(self, prefix: str) -> tuple[list[p.KeyValue], int]:
        async def fetch(request: Any) -> Any:
            return await self._call(
                f"get prefix {prefix}", lambda: _raw(self._client, "Range", request), retry=True
            )

        return await self._codec.list_prefix(prefix, fetch)

    async def get_range(
        self,
        prefix: str,
        *,
        after: str = "",
        before: str = "",
        limit: int = 0,
        descending: bool = False,
    ) -> tuple[list[p.KeyValue], int, int]:
        request = self._codec.range_request(
            prefix, after=after, before=before, limit=limit, descending=descending
        )
        response = await self._call(
            f"get range {prefix}", lambda: _raw(self._client, "Range", request), retry=True
        )
        kvs = [self._codec.kv(kv) for kv in response.kvs]
        return kvs, int(response.header.revision), int(response.count)

    async def compact(self, revision: int) -> None:
        """Drop etcd's history before ``revision`` (operations and tests); watches from an
        older revision then fail with ``StoreUnavailable``."""
        await self._call(f"compact {revision}", lambda: self._client.compact(revision))

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        response = await self._call(
            f"put {key}", lambda: self._client.put(self._key(key), value, lease=lease)
        )
        return int(response.header.revision)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        if prefix:
            response = await self._call(
                f"delete prefix {key}", lambda: self._client.delete_prefix(self._key(key))
            )
        else:
            response = await self._call(
                f"delete {key}",
                lambda: self._client.delete(self._key(key), return_response=True),
            )
        return int(response.deleted)

    # -- transactions -------------------------------------------------------------------

    async def txn(
        self,
        compares: Sequence[p.Compare],
        success: Sequence[p.TxnOp],
        failure: Sequence[p.TxnOp] = (),
    ) -> p.TxnResult:
        request = self._codec.txn_request(compares, success, failure)
        response = await self._call("txn", lambda: _raw_txn(self._client, request))
        return self._codec.txn_result(response)

    # -- leases -------------------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> p.Lease:
        sent = time.monotonic()
        granted = await self._call(
            "grant lease", lambda: self._client.lease(ttl), retry=True, lease=True
        )
        lease = p.Lease(id=int(granted.id), ttl=int(granted.ttl))
        self._keeper.keep(lease.id, lease.ttl, sent)  # kept from birth: see keepalive.py
        return lease

    def _refresh_now(self, lease_id: int) -> int:
        """One keepalive, on the calling (keeper) thread: the TTL, or ``keepalive.Gone``."""

        def ask() -> int:
            try:
                # refresh_lease() is a generator in this client: drain it
                responses = list(self._client.refresh_lease(lease_id))
            except Exception as exc:
                raise translate(exc, f"refresh lease {lease_id:x}") from exc
            return int(responses[0].TTL) if responses else 0

        return keepalive.refresh_now(lease_id, ask)

    async def refresh_lease(self, lease_id: int) -> int:
        async def ask() -> int:
            # refresh_lease() is a generator in this client: drain it on the lane thread
            responses = await self._call(
                f"refresh lease {lease_id:x}",
                lambda: list(self._client.refresh_lease(lease_id)),
                retry=True,
                lease=True,
            )
            return int(responses[0].TTL) if responses else 0

        return await keepalive.refresh(self._keeper, lease_id, ask)

    async def revoke_lease(self, lease_id: int) -> None:
        """Revoke the lease (deleting its keys); a lease already gone is not an error."""
        self._keeper.forget(lease_id)
        try:
            await self._call(
                f"revoke lease {lease_id:x}",
                lambda: self._client.revoke_lease(lease_id),
                retry=True,
                lease=True,
            )
        except errors.LeaseExpired:
            pass

    # -- watches ------------------------------------------------------------------------

    def _events(self, response: Any) -> list[p.WatchEvent]:
        return [
            self._codec.event(isinstance(event, etcd_events.DeleteEvent), event)
            for event in response.events
        ]

    async def watch_prefix(
        self, prefix: str, *, start_revision: int | None = None
    ) -> AsyncGenerator[p.WatchEvent, None]:
        """Events under ``prefix``; see ``Store.watch_prefix``.

        The etcd watch is created when iteration starts (the first ``__anext__``), so
        "from now" means from then; pass ``start_revision`` (a read's revision + 1) to
        miss nothing.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[p.WatchEvent] | _Broken] = asyncio.Queue()
        open_ = [True]

        def deliver(item: list[p.WatchEvent] | _Broken) -> None:
            if not open_[0]:
                return
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                open_[0] = False

        def on_response(response: Any) -> None:  # runs on the client's watch thread
            if response is None or isinstance(response, BaseException):
                deliver(_Broken(response))
                return
            found = self._events(response)
            stray = next((e.key for e in found if not e.key.startswith(prefix)), None)
            if stray is not None:
                deliver(_Broken(MisWired(f"an event of {stray!r} on the watch of {prefix!r}")))
            else:
                deliver(found)

        key = self._key(prefix)
        watch_id = await self._call(
            f"watch {prefix}",
            lambda: self._client.add_watch_prefix_callback(
                key, on_response, start_revision=start_revision
            ),
        )
        token = next(self._watch_tokens)
        self._watches.add(token)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Broken):
                    error = translate(item.error or ConnectionError("stream closed"), "watch")
                    raise errors.StoreUnavailable(
                        f"watch {prefix} broke: {error}", retry_after=0.1
                    ) from item.error
                for event in item:
                    yield event
        finally:
            open_[0] = False
            self._watches.discard(token)
            self._cancel_watch(watch_id, on_response)

    def _cancel_watch(self, watch_id: int, callback: Callable[[Any], None]) -> None:
        """Cancel the watch on a call thread, by identity (``etcdwatch.cancel``)."""
        try:
            self._pool.submit(etcdwatch.cancel, self._client, watch_id, callback)
        except RuntimeError:  # pool shut down: close() ended every watch already
            pass

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._keeper.stop()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._pool, self._client.close)
        except Exception as exc:
            log.debug("closing the etcd client: %s", exc)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._lease_pool.shutdown(wait=False, cancel_futures=True)
        self._urgent_pool.shutdown(wait=False, cancel_futures=True)


class MisWired(ConnectionError):
    """A watch received another watch's events. The client pairs each watch it creates
    with the next "created" answer on the shared watch stream; when one creation timed
    out (etcd slow under load) its late answer is paired with the next creation, whose
    callback then gets the other prefix's events (seen in a 10,000-agent herd: a
    controller on ``health/`` got ``inventory/`` keys and stopped its replica). The watch
    is ended as broken: its consumer lists again and watches anew, nothing lost."""


class _Broken:
    """A watch stream ended: ``error`` is what ended it (None: closed by the server)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error
