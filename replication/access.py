"""Who may read an image's bytes from whom: the relay's authorization, from the copy orders.

A site may pull image ``I`` from site ``S`` only when the catalog says so:

- ``I`` is a registered catalog entry;
- the caller holds a copy order for ``I`` — its replica is ``transferring`` — and the
  order names ``S`` as its source (the relay parent the controller assigned);
- ``S`` holds ``I`` as a verified replica: ``active``, with the catalog's sha256.

Everything else is refused with the reason, so a site's certificate is worth exactly the
copies the fenced controller ordered for it: an image whose policy does not target it, a
file lying in another site's store that was never registered, a replica still arriving or
one that failed its audit — none of them leave a site. ``bounded_chunk`` keeps a request
from making a source read (and allocate) more than ``MAX_CHUNK`` bytes at once.

Pure: the broker reads the three records from etcd at one revision and asks ``refusal``.
"""

from __future__ import annotations

from replication.catalog import Entry, Replica, State, valid_id

__all__ = ["MAX_CHUNK", "bounded_chunk", "refusal", "valid_id"]

MAX_CHUNK = 4 << 20
"""The largest chunk a source reads and sends at once (the relay's messages are 8 MiB)."""

def bounded_chunk(requested: int, default: int) -> int | str:
    """The chunk size to read with, or why ``requested`` is refused (0 means ``default``)."""
    if requested == 0:
        return default
    if requested < 0 or requested > MAX_CHUNK:
        return f"chunk_size {requested} is not within 1..{MAX_CHUNK} bytes"
    return requested


def refusal(
    image: str,
    caller: str,
    source: str,
    entry: Entry | None,
    ordered: Replica | None,
    held: Replica | None,
) -> str | None:
    """Why ``caller`` may not pull ``image`` from ``source`` (``None``: it may).

    ``entry`` is the catalog record, ``ordered`` the caller's replica of the image and
    ``held`` the source's, each ``None`` when absent.
    """
    if entry is None:
        return f"image {image!r} is not in the catalog"
    if ordered is None or ordered.state is not State.TRANSFERRING:
        return f"site {caller} has no copy order for image {image}"
    if ordered.source != source:
        return (
            f"the copy order of image {image} at {caller} names source "
            f"{ordered.source or '(none)'}, not {source}"
        )
    if held is None or held.state is not State.ACTIVE or held.sha256 != entry.image.sha256:
        return f"site {source} holds no verified replica of image {image}"
    return None
