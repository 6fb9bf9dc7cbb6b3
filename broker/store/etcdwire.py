"""What both etcd clients share: settings checks, error translation, the v3 messages.

The threaded client (``etcd``) and the asyncio one (``etcdaio``) speak the same etcd v3
protocol, so everything that is protocol, not transport, lives here once:

- ``check`` refuses settings that cannot work (a certificate without its key, ...);
- ``translate`` is the one boundary where foreign exceptions become ``broker.errors``:
  unreachable / timed out / no leader / compacted -> ``StoreUnavailable`` (with
  ``retry_after``), unknown lease -> ``LeaseExpired``, a malformed request ->
  ``InvalidInput``. Nothing from ``etcd3`` or ``grpc`` escapes either client;
- ``Codec`` turns the ``Store`` protocol's values into etcd's protobuf messages and back,
  under the store's root prefix (invariant: every key a client sends starts with the
  root, every key it returns has the root removed).

The messages are cslab-etcd3's generated ``etcdrpc`` module; nothing here opens a
connection.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import etcd3.exceptions as etcd_exceptions
import etcd3.utils as etcd_utils
from etcd3 import etcdrpc

from broker import errors
from broker.settings import EtcdSettings
from broker.store import protocol as p

log = logging.getLogger(__name__)

ENDPOINT_RETRY_SECONDS = 1

LIST_PAGE = 256
"""Keys per Range of a prefix listing: a listing is read page by page at one revision, so
no answer approaches a message bound however large the prefix grows (observed/ of 1,000
VNFs is ~5.5 MB)."""
MAX_MESSAGE = 64 * 1024 * 1024
"""Largest message a client takes from etcd: a page of big values, or a watch catching up
over many revisions (etcd sends those in one response), must not end the call with
gRPC's default 4 MiB bound (RESOURCE_EXHAUSTED)."""

# Channel options: fast reconnects after an etcd restart, keepalive pings so a dead peer
# behind a silent network is noticed by long-lived watch streams, and MAX_MESSAGE.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]

_TARGETS = {
    p.Target.VALUE: (etcdrpc.Compare.VALUE, "value"),
    p.Target.CREATE: (etcdrpc.Compare.CREATE, "create_revision"),
    p.Target.MOD: (etcdrpc.Compare.MOD, "mod_revision"),
    p.Target.VERSION: (etcdrpc.Compare.VERSION, "version"),
}
_RESULTS = {
    p.Op.EQUAL: etcdrpc.Compare.EQUAL,
    p.Op.NOT_EQUAL: etcdrpc.Compare.NOT_EQUAL,
    p.Op.LESS: etcdrpc.Compare.LESS,
    p.Op.GREATER: etcdrpc.Compare.GREATER,
}
_UNAVAILABLE_ETCD3 = (
    etcd_exceptions.ConnectionFailedError,
    etcd_exceptions.ConnectionTimeoutError,
    etcd_exceptions.InternalServerError,
    etcd_exceptions.PreconditionFailedError,
    etcd_exceptions.WatchTimedOut,
)


def grpc_status(exc: BaseException | None) -> tuple[str, str] | None:
    """(code name, details) of a grpc.RpcError, found on ``exc`` or what it wraps.

    Duck-typed: the threaded client must not import grpc (import-linter contract).
    """
    while exc is not None:
        code, details = getattr(exc, "code", None), getattr(exc, "details", None)
        if callable(code) and callable(details):
            try:
                return str(getattr(code(), "name", code())), str(details() or "")
            except Exception as odd:
                log.debug("unreadable gRPC status on %r: %s", exc, odd)
        exc = exc.__cause__ or exc.__context__
    return None


def translate(exc: BaseException, what: str) -> errors.BrokerError:
    """The broker error for a foreign exception raised while doing ``what``."""
    if isinstance(exc, errors.BrokerError):
        return exc
    status = grpc_status(exc)
    detail = f" ({status[0]}: {status[1]})" if status else ""
    if isinstance(exc, etcd_exceptions.RevisionCompactedError):
        return compacted(what, exc.compacted_revision)
    if isinstance(exc, etcd_exceptions.NoServerAvailableError):
        return errors.StoreUnavailable(
            f"{what}: every etcd endpoint failed recently", retry_after=ENDPOINT_RETRY_SECONDS
        )
    if isinstance(exc, TimeoutError):
        return errors.StoreUnavailable(f"{what}: etcd timed out")
    if isinstance(exc, _UNAVAILABLE_ETCD3):
        return errors.StoreUnavailable(f"{what}: {exc}{detail}")
    if status is not None:
        code, details = status
        if code == "NOT_FOUND" and "lease" in details:
            return errors.LeaseExpired(f"{what}: {details}")
        if code == "INVALID_ARGUMENT":
            return errors.InvalidInput(what, details)
        return errors.StoreUnavailable(f"{what}: etcd answered {code}: {details}")
    return errors.StoreUnavailable(f"{what}: {type(exc).__name__}: {exc}")


def compacted(what: str, revision: int) -> errors.StoreUnavailable:
    return errors.StoreUnavailable(
        f"{what}: revision compacted up to {revision}; re-list", retry_after=0.0
    )


def split_endpoint(endpoint: str) -> tuple[str, int]:
    rest = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise errors.SettingsError([f"etcd.endpoints: {endpoint!r} is not host:port"])
    return host.strip("[]"), int(port)


def check(settings: EtcdSettings) -> list[tuple[str, int]]:
    """The (host, port) of every endpoint; ``SettingsError`` for settings that cannot work."""
    if bool(settings.cert_file) != bool(settings.key_file):
        raise errors.SettingsError(["etcd.cert_file, etcd.key_file: set both or neither"])
    if settings.cert_file and not settings.ca_file:
        raise errors.SettingsError(["etcd.ca_file: needed with a client certificate"])
    if not settings.endpoints:
        raise errors.SettingsError(["etcd.endpoints: at least one endpoint is needed"])
    return [split_endpoint(endpoint) for endpoint in settings.endpoints]


def read_tls(settings: EtcdSettings) -> tuple[bytes, bytes | None, bytes | None]:
    """(CA, client key, client certificate) as bytes; ``SettingsError`` if unreadable."""

    def read(path: str) -> bytes | None:
        if not path:
            return None
        try:
            with open(path, "rb") as file:
                return file.read()
        except OSError as exc:
            problem = f"etcd: cannot read {exc.filename}: {exc.strerror}"
            raise errors.SettingsError([problem]) from exc

    return read(settings.ca_file) or b"", read(settings.key_file), read(settings.cert_file)


class Codec:
    """``Store`` values <-> etcd v3 messages under one root prefix."""

    def __init__(self, root: str) -> None:
        self.root = root

    def key(self, key: str) -> bytes:
        return (self.root + key).encode()

    def unkey(self, raw: bytes) -> str:
        return bytes(raw).decode()[len(self.root) :]

    def kv(self, kv: Any) -> p.KeyValue:
        return p.KeyValue(
            key=self.unkey(kv.key),
            value=bytes(kv.value),
            create_revision=int(kv.create_revision),
            mod_revision=int(kv.mod_revision),
            version=int(kv.version),
            lease=int(kv.lease),
        )

    def prefix_end(self, prefix: str) -> bytes:
        return bytes(etcd_utils.prefix_range_end(self.key(prefix)))

    def range_request(
        self, prefix: str, *, after: str, before: str, limit: int, descending: bool
    ) -> Any:
        """The RangeRequest of ``Store.get_range``."""
        start = self.key(prefix + after) + b"\0" if after else self.key(prefix)
        end = self.key(prefix + before) if before else self.prefix_end(prefix)
        return etcdrpc.RangeRequest(
            key=start,
            range_end=end,
            limit=limit,
            sort_order=(
                etcdrpc.RangeRequest.DESCEND if descending else etcdrpc.RangeRequest.ASCEND
            ),
            sort_target=etcdrpc.RangeRequest.KEY,
        )

    def compare(self, compare: p.Compare) -> Any:
        target, field = _TARGETS[compare.target]
        message = etcdrpc.Compare(
            key=self.key(compare.key), target=target, result=_RESULTS[compare.op]
        )
        if compare.target is p.Target.VALUE:
            if not isinstance(compare.value, bytes):
                raise TypeError(f"compare on VALUE of {compare.key} needs bytes")
        elif isinstance(compare.value, bytes) or not isinstance(compare.value, int):
            raise TypeError(f"compare on {compare.target.name} of {compare.key} needs an int")
        setattr(message, field, compare.value)
        return message

    def request(self, op: p.TxnOp) -> Any:
        key = self.key(op.key)
        if isinstance(op, p.Put):
            put = etcdrpc.PutRequest(key=key, value=op.value, lease=op.lease)
            return etcdrpc.RequestOp(request_put=put)
        range_end = self.prefix_end(op.key) if op.prefix else b""
        if isinstance(op, p.Delete):
            delete = etcdrpc.DeleteRangeRequest(key=key, range_end=range_end)
            return etcdrpc.RequestOp(request_delete_range=delete)
        get = etcdrpc.RangeRequest(key=key, range_end=range_end)
        return etcdrpc.RequestOp(request_range=get)

    def txn_request(
        self,
        compares: Sequence[p.Compare],
        success: Sequence[p.TxnOp],
        failure: Sequence[p.TxnOp],
    ) -> Any:
        return etcdrpc.TxnRequest(
            compare=[self.compare(c) for c in compares],
            success=[self.request(op) for op in success],
            failure=[self.request(op) for op in failure],
        )

    def txn_result(self, response: Any) -> p.TxnResult:
        results: list[tuple[p.KeyValue, ...]] = []
        for op_response in response.responses:
            if op_response.WhichOneof("response") == "response_range":
                kvs = (self.kv(kv) for kv in op_response.response_range.kvs)
                results.append(tuple(sorted(kvs, key=lambda kv: kv.key)))
            else:
                results.append(())
        return p.TxnResult(
            succeeded=bool(response.succeeded),
            revision=int(response.header.revision),
            responses=tuple(results),
        )

    def event(self, deleted: bool, kv: Any) -> p.WatchEvent:
        """A watch event from ``kv`` (anything with key, value and revisions)."""
        return p.WatchEvent(
            type=p.EventType.DELETE if deleted else p.EventType.PUT,
            key=self.unkey(kv.key),
            value=b"" if deleted else bytes(kv.value),
            mod_revision=int(kv.mod_revision),
            create_revision=0 if deleted else int(kv.create_revision),
        )

    async def list_prefix(
        self, prefix: str, fetch: Callable[[Any], Awaitable[Any]]
    ) -> tuple[list[p.KeyValue], int]:
        """``Store.get_prefix`` in pages of ``LIST_PAGE`` keys, every page read at the
        first one's revision (one snapshot; a compaction in between fails the listing,
        and its caller lists again). ``fetch`` sends one RangeRequest."""
        start, end = self.key(prefix), self.prefix_end(prefix)
        found: list[p.KeyValue] = []
        revision = 0
        while True:
            request = etcdrpc.RangeRequest(
                key=start, range_end=end, limit=LIST_PAGE, revision=revision
            )
            response = await fetch(request)
            revision = revision or int(response.header.revision)
            found += (self.kv(kv) for kv in response.kvs)
            if not response.more or not response.kvs:
                return sorted(found, key=lambda kv: kv.key), revision
            start = bytes(response.kvs[-1].key) + b"\0"
