"""Fuzzing VNF descriptors: random, truncated, mutated and oversized input never crashes.

``vnf.parse`` either returns a descriptor (whose expansion then works) or raises
``InvalidInput`` naming a field; any other exception is a crash the API would turn
into a 500. ``MERIDIAN_FUZZ_EXAMPLES`` raises the example count for a longer run.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import errors
from broker.models import vnf
from tests.support import placement as P

EXAMPLES = int(os.environ.get("MERIDIAN_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
SAMPLES = [(P.SAMPLES / f"{n}.yaml").read_text() for n in ("vfirewall", "vepc-upf", "vims")]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=30,
)


def survives(data: Any) -> None:
    try:
        desc = vnf.parse(data)
    except errors.InvalidInput as exc:
        assert exc.field and exc.problem
        return
    vnf.members(desc)
    vnf.deltas(desc)
    json.dumps(vnf.to_json(desc))


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    survives(data)


@FUZZ
@given(st.text(max_size=2048))
def test_random_text(data: str) -> None:
    survives(data)


@FUZZ
@given(st.sampled_from(SAMPLES), st.floats(0, 1))
def test_truncated_samples(text: str, fraction: float) -> None:
    survives(text[: int(len(text) * fraction)])


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@FUZZ
@given(st.data())
def test_mutated_samples(data: st.DataObject) -> None:
    base = vnf.to_json(P.sample(data.draw(st.sampled_from(["vfirewall", "vepc-upf", "vims"]))))
    path = data.draw(st.sampled_from(_paths(base)[1:]))
    node: Any = base
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = data.draw(json_values)
    survives(base)
    survives(json.dumps(base))


@settings(FUZZ, max_examples=max(EXAMPLES // 4, 10))  # each example parses up to 64 KiB
@given(st.sampled_from(SAMPLES), st.integers(1, 64), st.integers(0, 3))
def test_oversized(text: str, repeat: int, how: int) -> None:
    if how == 0:
        survives(text * repeat)  # duplicate keys, and over the byte bound
    elif how == 1:
        survives(text + "\ndescription: " + "x" * (repeat * 1024))
    elif how == 2:
        survives("[" * (repeat * 1000) + "]" * (repeat * 1000))
    else:
        lines = "\n".join(f"  k{i}: v" for i in range(repeat * 100))
        survives(text + "\nselectors:\n" + lines)
