"""What the openstack driver and the Glance image store share: markers, connecting, and
the one error boundary.

Every object the driver creates carries a marker ``meridian:<site>/<kind>/<name>:gen=N``
(in a tag, its metadata, properties or description, whichever the kind has) and a cloud
name ``meridian-<site>-<name>``; an object with the name but without the marker belongs
to someone else and is never touched.

``call`` runs one blocking openstacksdk call in a thread with a deadline and translates
every foreign exception — openstack.exceptions, keystoneauth1 exceptions, timeouts,
refused connections — into ``errors.DriverError`` here, and nowhere else: 5xx, 409, 429,
timeouts and unreachable endpoints are temporary; other 4xx are permanent. The cloud's own
message is kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

import openstack
from keystoneauth1 import exceptions as ksa_exc
from openstack import exceptions as os_exc
from openstack import warnings as os_warnings

from siteagent import errors

T = TypeVar("T")

PREFIX = "meridian"
_MARKER = re.compile(r"meridian:(?P<site>[^/]+)/(?P<kind>[^/]+)/(?P<name>.+):gen=(?P<gen>\d+)")
_TEMPORARY_STATUS = {408, 409, 429}


@dataclass(frozen=True, slots=True)
class Marker:
    site: str
    kind: str
    name: str
    generation: int

    def __str__(self) -> str:
        return f"{PREFIX}:{self.site}/{self.kind}/{self.name}:gen={self.generation}"

    @staticmethod
    def parse(text: object) -> Marker | None:
        if not isinstance(text, str):
            return None
        match = _MARKER.fullmatch(text.strip())
        if match is None:
            return None
        return Marker(match["site"], match["kind"], match["name"], int(match["gen"]))

    def same_object(self, other: Marker | None) -> bool:
        return other is not None and (other.site, other.kind, other.name) == (
            self.site,
            self.kind,
            self.name,
        )


def find_marker(*candidates: object) -> Marker | None:
    """The first Meridian marker among strings or lists of strings (tags)."""
    for candidate in candidates:
        items = candidate if isinstance(candidate, list | tuple) else [candidate]
        for item in items:
            marker = Marker.parse(item)
            if marker is not None:
                return marker
    return None


def cloud_name(site: str, name: str) -> str:
    return f"{PREFIX}-{site}-{name}"


def connect(**kwargs: Any) -> Any:
    """``openstack.connect``, without the SDK's own deprecation noise about InfluxDB.

    openstacksdk 4 warns about its InfluxDB support on every connection made, configured
    or not; that warning says nothing about this cloud, so it is dropped here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Support for InfluxDB", category=os_warnings.RemovedInSDK60Warning
        )
        return openstack.connect(**kwargs)


def connect_to(cloud: str, timeout: float) -> Any:
    """The agent's own connection: the cloud named in its ``clouds.yaml``, or ``OS_*``
    when ``cloud`` is empty; every request bounded by ``timeout`` seconds."""
    kwargs: dict[str, Any] = {"api_timeout": timeout}
    if cloud:
        kwargs["cloud"] = cloud
    return connect(**kwargs)


def connect_as_project(conn: Any, project: str | dict[str, Any]) -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Support for InfluxDB", category=os_warnings.RemovedInSDK60Warning
        )
        return conn.connect_as_project(project)


def _status_of(exc: BaseException) -> int | None:
    for attr in ("status_code", "http_status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    return None


def _message_of(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    message = str(details) if details else ""
    if not message:
        message = str(exc) or type(exc).__name__
    return " ".join(message.split())[:500]


def translate(kind: str, name: str, exc: BaseException) -> errors.SiteAgentError:
    """The driver's own error for a foreign exception raised by the cloud or the network."""
    if isinstance(exc, errors.SiteAgentError):
        return exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | os_exc.ResourceTimeout):
        return errors.DriverError(
            kind, name, f"timed out: {_message_of(exc)}", temporary=True, retry_after=2.0
        )
    if isinstance(
        exc,
        ksa_exc.ConnectFailure
        | ksa_exc.ConnectTimeout
        | ksa_exc.RequestTimeout
        | ksa_exc.DiscoveryFailure
        | ksa_exc.EndpointNotFound
        | ksa_exc.RetriableConnectionFailure
        | ConnectionError
        | os_exc.EndpointNotFound,
    ):
        return errors.DriverError(
            kind, name, f"cloud unreachable: {_message_of(exc)}", temporary=True, retry_after=2.0
        )
    status = _status_of(exc)
    message = _message_of(exc)
    if status is not None:
        temporary = status >= 500 or status in _TEMPORARY_STATUS
        retry_after: float | None = None
        response = getattr(exc, "response", None)
        header = getattr(response, "headers", {}).get("Retry-After") if response else None
        if header is not None:
            try:
                retry_after = float(header)
            except ValueError:
                retry_after = None
        return errors.DriverError(
            kind,
            name,
            f"HTTP {status}: {message}",
            temporary=temporary,
            retry_after=retry_after if retry_after is not None else (1.0 if temporary else None),
        )
    if isinstance(exc, ksa_exc.ClientException | os_exc.SDKException | OSError):
        return errors.DriverError(kind, name, message, temporary=True, retry_after=2.0)
    return errors.DriverError(kind, name, f"{type(exc).__name__}: {message}", temporary=False)


async def call(kind: str, name: str, deadline: float, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread within ``deadline`` seconds; foreign errors translated."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), deadline)
    except errors.SiteAgentError:
        raise
    except Exception as exc:
        raise translate(kind, name, exc) from exc


def not_found(exc: BaseException) -> bool:
    return _status_of(exc) == 404 or isinstance(exc, os_exc.NotFoundException)


class HashingReader:
    """A file whose reads feed sha256 and sha512 (Glance's ``os_hash_algo``), for an
    upload checked against what was sent; ``len`` lets requests send a length."""

    def __init__(self, stream: BinaryIO, size: int, chunk: int = 1 << 20) -> None:
        self._stream = stream
        self._size = size
        self._chunk = chunk
        self.sha256 = hashlib.sha256()
        self.sha512 = hashlib.sha512()

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(self._chunk if n is None or n < 0 else n)
        self.sha256.update(data)
        self.sha512.update(data)
        return data
