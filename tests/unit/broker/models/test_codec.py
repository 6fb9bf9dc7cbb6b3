"""codec.encode writes exactly what ``json.dumps(dataclasses.asdict(...))`` wrote (etcd
holds values written by both), and refuses what JSON cannot hold."""

from __future__ import annotations

import dataclasses
import enum
import json
import types
from typing import Any

import pytest

from broker.models import codec, objects
from broker.models.site import SiteStatus


class Colour(enum.StrEnum):
    RED = "red"


@dataclasses.dataclass(frozen=True)
class Inner:
    name: str
    colour: Colour = Colour.RED
    sizes: tuple[int, ...] = (1, 2)


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner
    items: list[Inner]
    by_name: dict[str, Inner]
    spec: Any = None
    missing: int | None = None


def reference(value: Any) -> bytes:
    return json.dumps(dataclasses.asdict(value), separators=(",", ":"), sort_keys=True).encode()


@pytest.mark.parametrize(
    "value",
    [
        Outer(Inner("a"), [Inner("b"), Inner("c", sizes=())], {"z": Inner("z"), "a": Inner("a")},
              spec={"b": [1, {"y": 2, "x": (3, 4)}], "a": None, "c": 1.5}),
        objects.Desired(3, {"flavor": {"vcpus": 4, "extra_specs": {"hw:cpu_policy": "dedicated"}}}),
        objects.Desired(1).tombstone(),
        SiteStatus(site="s", replica="r", session_id="x", protocol="1.2", agent_version="v",
                   connected_ms=1, last_heartbeat_ms=2, heartbeat_seq=3),
    ],
)
def test_encode_is_byte_identical_to_asdict(value: Any) -> None:
    assert codec.encode(value) == reference(value)


def test_a_mapping_that_is_no_dict_is_encoded_as_one() -> None:
    value = objects.Desired(1, types.MappingProxyType({"b": 1, "a": {"c": 2}}))
    assert codec.encode(value) == b'{"deleted":false,"generation":1,"spec":{"a":{"c":2},"b":1}}'


def test_what_json_cannot_hold_is_refused() -> None:
    with pytest.raises(TypeError):
        codec.encode(Outer(Inner("a"), [], {}, spec={1, 2}))
