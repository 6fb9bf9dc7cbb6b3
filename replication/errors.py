"""Every error the replication library raises, under one root.

Foreign exceptions never arrive here: the adapters that implement ``ByteSource`` and
``ByteSink`` translate their own failures first. A ``Temporary`` error carries a delay
and is worth retrying (from the last verified offset); every other error is permanent
until its input changes.

ReplicationError
├── Temporary                      (retry_after: seconds)
│   ├── ChunkCorrupt               (offset) a chunk's sha256 did not match its header
│   ├── PeerGone                   the source or the sink went away mid-transfer
│   └── ImageChanging              (image) its bytes changed while they were being read
├── InvalidImage                   (field, problem) bad catalog entry or selector
├── UnknownImage                   (image) not in the catalog
├── UnknownSite                    (site) not a registered site
├── IllegalTransition              (site, current, wanted) replica state machine refusal
├── ImageMismatch                  (image, expected, actual) whole-image size/digest wrong
├── SourceFailed                   (reason) the source cannot serve the image
├── SinkRejected                   (reason) the destination refused the bytes
└── CacheFull                      (needed, free) the destination has no room
"""

from __future__ import annotations


class ReplicationError(Exception):
    """Root of every error the replication library raises."""


class Temporary(ReplicationError):
    """Retrying later, from the last verified offset, may succeed."""

    def __init__(self, message: str, *, retry_after: float = 0.5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ChunkCorrupt(Temporary):
    """A chunk's bytes do not match the sha256 sent with it; it was not written."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"chunk at offset {offset} failed its sha256 check", retry_after=0.0)
        self.offset = offset


class PeerGone(Temporary):
    """The source or the destination disconnected before the transfer finished."""


class ImageChanging(Temporary):
    """The image's file changed (grew, was rewritten) while its digest was being taken:
    the digest is of no version of it, so it is not reported; audit again later."""

    def __init__(self, image: str) -> None:
        super().__init__(f"image {image} changed while it was being read; audit it again")
        self.image = image


class InvalidImage(ReplicationError):
    """A catalog entry, selector or policy is malformed; ``field`` is its dotted path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class UnknownImage(ReplicationError):
    """The image id is not in the catalog."""

    def __init__(self, image: str) -> None:
        super().__init__(f"image {image!r} is not in the catalog; register it first")
        self.image = image


class UnknownSite(ReplicationError):
    """The site id is not registered."""

    def __init__(self, site: str) -> None:
        super().__init__(f"site {site!r} is not registered")
        self.site = site


class IllegalTransition(ReplicationError):
    """A replica cannot move from ``current`` to ``wanted``."""

    def __init__(self, site: str, current: str, wanted: str) -> None:
        super().__init__(f"replica at {site}: {current} -> {wanted} is not allowed")
        self.site = site
        self.current = current
        self.wanted = wanted


class ImageMismatch(ReplicationError):
    """The whole image's size or digest differs from the catalog: never activated."""

    def __init__(self, image: str, expected: str, actual: str) -> None:
        super().__init__(f"image {image}: expected {expected}, got {actual}")
        self.image = image
        self.expected = expected
        self.actual = actual


class SourceFailed(ReplicationError):
    """The source site cannot serve the image (unknown there, unreadable)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"source cannot serve the image: {reason}")
        self.reason = reason


class SinkRejected(ReplicationError):
    """The destination store refused the upload (e.g. Glance said no)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"destination rejected the upload: {reason}")
        self.reason = reason


class CacheFull(ReplicationError):
    """The destination has less room than the image needs."""

    def __init__(self, needed: int, free: int) -> None:
        super().__init__(f"destination cache full: needs {needed} bytes, {free} free")
        self.needed = needed
        self.free = free
