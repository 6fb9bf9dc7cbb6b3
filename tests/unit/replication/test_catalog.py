"""Catalog entries and the replica state machine (table-driven)."""

from __future__ import annotations

import hashlib

import pytest

from replication import catalog, errors
from replication.catalog import ImageId, Replica, SiteId, State

SHA = hashlib.sha256(b"x").hexdigest()


def image(**over: object) -> catalog.Image:
    fields: dict[str, object] = {
        "id": "img-1",
        "name": "cirros",
        "size": 1,
        "sha256": SHA,
        "source_site": "s1",
    }
    fields.update(over)
    return catalog.Image(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"id": ""}, "id"),
        ({"id": "a/b"}, "id"),
        ({"name": ""}, "name"),
        ({"size": -1}, "size"),
        ({"sha256": "ABC"}, "sha256"),
        ({"sha256": SHA.upper()}, "sha256"),
        ({"source_site": ""}, "source_site"),
        ({"os_hash_algo": "md5"}, "os_hash_algo"),
        ({"disk_format": "zip"}, "disk_format"),
        ({"container_format": "tar"}, "container_format"),
    ],
)
def test_invalid_images_name_the_field(over: dict[str, object], field: str) -> None:
    with pytest.raises(errors.InvalidImage) as info:
        image(**over)
    assert info.value.field == field


def test_image_round_trips() -> None:
    img = image(properties={"hw_vif_model": "virtio"}, os_hash_value="ab")
    assert catalog.Image.from_dict(img.to_dict()) == img


def test_malformed_dict_is_invalid_image() -> None:
    with pytest.raises(errors.InvalidImage):
        catalog.Image.from_dict({"id": "x"})


R = Replica(ImageId("i"), SiteId("s"))


@pytest.mark.parametrize(
    ("steps", "final"),
    [
        (["queue"], State.QUEUED),
        (["queue", "start"], State.TRANSFERRING),
        (["queue", "start", "progress"], State.TRANSFERRING),
        (["queue", "start", "progress", "verify", "activate"], State.ACTIVE),
        (["queue", "start", "fail"], State.FAILED),
        (["queue", "start", "fail", "queue"], State.QUEUED),
        (["queue", "start", "queue"], State.QUEUED),
        (["queue", "start", "verify", "fail"], State.FAILED),
        (["queue", "start", "verify", "activate", "queue"], State.QUEUED),
        (["fail"], State.FAILED),
    ],
)
def test_legal_paths(steps: list[str], final: State) -> None:
    r = R
    for step in steps:
        r = _apply(r, step)
    assert r.state is final


@pytest.mark.parametrize(
    "steps",
    [
        ["activate"],
        ["queue", "activate"],
        ["queue", "start", "activate"],  # never active without verifying (invariant 8)
        ["start"],
        ["verify"],
        ["queue", "verify"],
        ["queue", "start", "verify", "activate", "fail"],
        ["queue", "start", "fail", "start"],
    ],
)
def test_illegal_paths(steps: list[str]) -> None:
    r = R
    with pytest.raises(errors.IllegalTransition):
        for step in steps:
            r = _apply(r, step)


def _apply(r: Replica, step: str) -> Replica:
    if step == "progress":
        return r.progress(5, 10.0)
    if step == "activate":
        return r.activate(5)
    if step == "fail":
        return r.fail("boom")
    return getattr(r, step)()  # type: ignore[no-any-return]


def test_progress_and_failure_are_recorded_and_round_trip() -> None:
    r = R.queue(priority=100).start().progress(42, 7.5)
    assert (r.offset, r.rate, r.attempts, r.priority) == (42, 7.5, 1, 100)
    f = r.fail("cache full")
    assert f.reason == "cache full" and f.rate == 0.0
    assert Replica.from_dict(f.to_dict()) == f
    assert f.queue().reason == ""


def test_holders_are_active_replicas_only() -> None:
    reps = {
        SiteId("a"): R.queue().start().verify().activate(1),
        SiteId("b"): R.queue().start(),
    }
    assert catalog.holders(reps) == {SiteId("a")}
