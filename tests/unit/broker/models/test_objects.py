"""Desired/observed envelopes: encoding, generation rules, tombstones, and the kind
registry that gives every key space one owner (invariant 13)."""

from __future__ import annotations

import pytest
from meridian.v1 import agent_pb2 as pb

from broker import errors
from broker.gateway import convert, statuswriter
from broker.gateway.sessions import Session
from broker.models import objects
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.support.gateway import gateway_on


def test_an_envelope_round_trips_and_generations_only_go_up() -> None:
    first = objects.first({"vcpus": 2})
    assert objects.Desired.decode(first.encode()) == first
    assert first.generation == objects.FIRST and not first.deleted
    revised = first.revise({"vcpus": 4})
    assert (revised.generation, dict(revised.spec)) == (2, {"vcpus": 4})
    gone = revised.tombstone()
    assert (gone.generation, gone.deleted, dict(gone.spec)) == (3, True, {})
    assert gone.tombstone().generation == 4


def test_a_corrupt_envelope_names_the_field() -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        objects.Desired.decode(b'{"generation": "two"}')
    assert caught.value.field == "generation"


def test_each_kind_is_registered_once() -> None:
    assert objects.lookup(objects.Space.OBSERVED, "image") is not None
    with pytest.raises(errors.AlreadyExists):
        objects.register(objects.Space.OBSERVED, "image", objects.CopyReport, "replication")
    assert objects.agent_kind("image") and objects.agent_kind("server")
    assert not objects.agent_kind("imagecopy") and not objects.agent_kind("imageaudit")
    assert objects.IMAGE_COPY.name != "image"
    assert keys.split_object(keys.image_copy("s1", "img"))[1] == objects.IMAGE_COPY.name


def test_the_wire_maps_one_to_one() -> None:
    value = objects.Desired(3, {"a": 1}, False)
    msg = convert.desired_to_wire("flavor", "small", value).desired
    assert (msg.kind, msg.name, msg.generation, msg.spec_json, msg.deleted) == (
        "flavor", "small", 3, b'{"a":1}', False
    )
    st = pb.ObjectStatus(kind="server", name="vm", observed_generation=2,
                         state=pb.OBJECT_STATE_FAILED, message="no host", temporary=True,
                         outputs={"host": "h1"})
    status = objects.Status.decode(convert.status_from_wire(st, 7).encode())
    assert status == objects.Status("server", "vm", 2, objects.State.FAILED, "no host", True,
                                    {"host": "h1"}, 7)
    assert status.settled_state() is objects.State.PENDING  # the agent retries it


async def test_an_agent_cannot_report_into_another_features_key_space(
    memory_store: MemoryStore,
) -> None:
    gateway = gateway_on(memory_store)
    session = Session("s1", "sid", 1, "1.0", "test", 0)
    writer = statuswriter.StatusWriter(memory_store)
    for kind, name in (("imagecopy", "img"), ("imageaudit", "held"), ("nonsense", "x"),
                       ("server", "a/b")):
        await gateway._status(session, pb.ObjectStatus(kind=kind, name=name), writer)
    assert writer.pending == {}
    await gateway._status(session, pb.ObjectStatus(kind="server", name="vm"), writer)
    assert list(writer.pending) == [keys.observed("s1", "server", "vm")]


def test_split_object_and_name_in() -> None:
    assert keys.split_object(keys.desired("s", "port", "p1")) == ("s", "port", "p1")
    assert keys.split_object(keys.observed("s")) == ("s", "", "")
    with pytest.raises(ValueError):
        keys.split_object("sites/s")
    assert keys.name_in(keys.SITES, keys.site("edge-1")) == "edge-1"
    with pytest.raises(ValueError):
        keys.name_in(keys.SITES, keys.inventory("edge-1"))
