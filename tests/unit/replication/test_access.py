"""Who may pull which image from whom (``replication.access``), as a table."""

from __future__ import annotations

import pytest

from replication import access, catalog
from replication.catalog import Entry, ImageId, Replica, SiteId, State

SHA = "a" * 64
IMG = catalog.Image(ImageId("img"), "n", 10, SHA, SiteId("s1"))
ENTRY = Entry(IMG)


def rep(site: str, state: State, source: str = "", sha: str = "") -> Replica:
    return Replica(IMG.id, SiteId(site), state, source=source, sha256=sha)


ORDER = rep("s2", State.TRANSFERRING, "s1")
HELD = rep("s1", State.ACTIVE, sha=SHA)


@pytest.mark.parametrize(
    ("entry", "ordered", "held", "why"),
    [
        (ENTRY, ORDER, HELD, None),
        (None, ORDER, HELD, "not in the catalog"),
        (ENTRY, None, HELD, "no copy order"),
        (ENTRY, rep("s2", State.QUEUED), HELD, "no copy order"),
        (ENTRY, rep("s2", State.ACTIVE, "s1", SHA), HELD, "no copy order"),
        (ENTRY, rep("s2", State.TRANSFERRING, "s3"), HELD, "names source s3, not s1"),
        (ENTRY, ORDER, None, "no verified replica"),
        (ENTRY, ORDER, rep("s1", State.TRANSFERRING, "s0"), "no verified replica"),
        (ENTRY, ORDER, rep("s1", State.ACTIVE, sha="b" * 64), "no verified replica"),
    ],
)
def test_refusal(
    entry: Entry | None, ordered: Replica | None, held: Replica | None, why: str | None
) -> None:
    found = access.refusal("img", "s2", "s1", entry, ordered, held)
    if why is None:
        assert found is None
    else:
        assert found is not None and why in found


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(0, 1 << 20), (1, 1), (access.MAX_CHUNK, access.MAX_CHUNK),
     (access.MAX_CHUNK + 1, "not within"), (1 << 31, "not within"), (-1, "not within")],
)
def test_bounded_chunk(requested: int, expected: int | str) -> None:
    found = access.bounded_chunk(requested, 1 << 20)
    if isinstance(expected, str):
        assert isinstance(found, str) and expected in found
    else:
        assert found == expected


def test_ids_match_in_full() -> None:
    assert access.valid_id("img-1")
    assert not access.valid_id("img-1\n")
    assert not access.valid_id("../x")
    assert not access.valid_id("")
