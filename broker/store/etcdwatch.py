"""The threaded client's watcher, with each watch creation paired with its own answer.

cslab-etcd3 runs every watch of a client on one etcd Watch stream and pairs each creation
with the next "created" answer on it. When a creation timed out (etcd slow under load),
its late answer was taken by the next creation, whose callback then got the first
watch's events -- another prefix's, or none at all on a quiet prefix: a silent watch. In
a 10,000-agent herd a leader's ``sitestatus/`` watch went silent that way and its site
health stopped judging with every agent welcomed.

Invariant kept here: a watch receives only the events of the watch it asked for. Every
creation asks etcd for a watch id of ours (``WatchCreateRequest.watch_id``, etcd >= 3.4),
drawn from a counter that never repeats in this process, and a "created" answer is taken
only by the creation that asked for its id. An answer nobody waits for any more (its
creation gave up) is cancelled at once. Ids never repeat, so a late cancel can never hit
another stream's watch either.

Everything else (one creation at a time, the reader thread, the request queue, delivery
of events and of a broken stream) is the client's own.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from etcd3 import exceptions as etcd_errors
from etcd3 import watch as etcd_watch
from etcd3.etcdrpc import WatchStub

_WATCH_ID_FIELD = 7  # WatchCreateRequest.watch_id, missing from the client's messages
REFUSED = -1  # the watch id of etcd's answer to a creation it refused
_ids = itertools.count(1)  # one counter for the process: an id is never reused
_ids_lock = threading.Lock()


def _next_id() -> int:
    with _ids_lock:
        return next(_ids)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def ask_for_id(request: Any, watch_id: int) -> None:
    """Set the create request's ``watch_id``. The client's protobuf messages predate the
    field, so it goes in as an unknown field, which protobuf keeps when it serializes."""
    request.create_request.MergeFromString(_varint(_WATCH_ID_FIELD << 3) + _varint(watch_id))


class WatchRefused(Exception):
    """etcd answered a watch creation by cancelling it (its reason is the message)."""


class _Asking:
    """A creation waiting for its answer."""

    __slots__ = ("callback", "err", "id", "wanted")

    def __init__(self, callback: Callable[[Any], None], wanted: int) -> None:
        self.callback = callback
        self.wanted = wanted
        self.id: int | None = None
        self.err: BaseException | None = None


class PairedWatcher(etcd_watch.Watcher):  # type: ignore[misc]  # the client is untyped
    """``etcd3.watch.Watcher`` whose creations carry their own ids (see the module)."""

    # the client's own state, typed here
    _new_watch: _Asking | None
    _stopping: bool
    _callback_thread: threading.Thread | None
    _callbacks: dict[int, Callable[[Any], None]]

    def add_callback(
        self,
        key: Any,
        callback: Callable[[Any], None],
        range_end: Any = None,
        start_revision: int | None = None,
        progress_notify: bool = False,
        filters: Any = None,
        prev_kv: bool = False,
    ) -> int:
        request = self._create_watch_request(
            key,
            range_end=range_end,
            start_revision=start_revision,
            progress_notify=progress_notify,
            filters=filters,
            prev_kv=prev_kv,
        )
        asking = _Asking(callback, _next_id())
        ask_for_id(request, asking.wanted)
        with self._lock:
            while self._new_watch is not None:  # one creation at a time, as the client
                self._new_watch_cond.wait()
            self._ensure_reader()  # after the wait: the stream may have ended meanwhile
            self._new_watch = asking
            self._request_queue.put(request)
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
            try:
                while asking.id is None and asking.err is None:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise etcd_errors.WatchTimedOut()
                    self._new_watch_cond.wait(left)
                if asking.err is not None or asking.id is None:
                    raise asking.err or etcd_errors.WatchTimedOut()
                return asking.id
            finally:
                self._new_watch = None
                self._new_watch_cond.notify_all()

    def _ensure_reader(self) -> None:
        """The reader thread of the current stream, started after the last one ended."""
        if self._stopping:
            if self._callback_thread is not None:
                self._callback_thread.join()
            self._callback_thread = None
            self._stopping = False
        if self._callback_thread is None:
            self._callback_thread = threading.Thread(
                name=f"etcd3_watch_{id(self):x}", target=self._run, daemon=True
            )
            self._callback_thread.start()

    def _handle_response(self, response: Any) -> None:
        if not response.created:
            super()._handle_response(response)
            return
        with self._lock:  # a "created" answer: only its own creation takes it
            asking = self._new_watch
            if asking is not None and response.canceled and response.watch_id == REFUSED:
                # etcd refused a creation (its answer names no id): the one waiting, as
                # creations go one at a time -- it fails now, not at its timeout
                asking.err = WatchRefused(response.cancel_reason or "watch refused")
                self._new_watch_cond.notify_all()
                return
            if asking is None or response.watch_id != asking.wanted:
                if not response.canceled:  # a creation given up on: nobody reads it
                    self._cancel_no_lock(response.watch_id)
                return
            if response.canceled:
                asking.err = WatchRefused(response.cancel_reason or "watch refused")
            elif response.compact_revision:
                asking.err = etcd_errors.RevisionCompactedError(response.compact_revision)
            else:
                self._callbacks[response.watch_id] = asking.callback
                asking.id = response.watch_id
            self._new_watch_cond.notify_all()


    def cancel_own(self, watch_id: int, callback: Callable[[Any], None]) -> None:
        """Cancel ``watch_id`` only while it is still ``callback``'s watch. etcd numbers
        watches per stream and a new stream reuses ids it numbered itself; a cancel by
        id alone that ran late silenced another prefix's new watch."""
        with self._lock:
            if self._callbacks.get(watch_id) is not callback:
                return
            del self._callbacks[watch_id]
            self._cancel_no_lock(watch_id)


def cancel(client: Any, watch_id: int, callback: Callable[[Any], None]) -> None:
    """Cancel the watch on ``client``'s current watcher, if it is still ``callback``'s.
    A watcher the client replaced ended its watches with its stream: nothing to do."""
    watcher = client._stubs.get("watcher")
    if isinstance(watcher, PairedWatcher):
        watcher.cancel_own(watch_id, callback)


def watcher_of(client: Any) -> PairedWatcher:
    """A ``PairedWatcher`` on ``client``'s channel, as ``client.get_watcher`` makes one."""
    return PairedWatcher(
        WatchStub(client.channel),
        timeout=client.timeout,
        call_credentials=client.call_credentials,
        metadata=client.metadata,
    )
