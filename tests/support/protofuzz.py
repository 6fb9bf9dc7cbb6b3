"""Hypothesis strategies for every message of the wire (``meridian.v1``), from descriptors.

``messages(cls)`` draws a message with random values in every field — numbers at their
type's limits, any text, unknown enum values, oneofs set in any combination, maps and
repeated fields, nested messages to a bounded depth; ``raw_bytes(cls)`` draws bytes a
decoder may meet: random, a valid encoding truncated or with a byte flipped, a valid
encoding padded with garbage. ``EXAMPLES`` bounds each property's examples (the normal
suite); ``MERIDIAN_FUZZ_EXAMPLES`` raises it for a long run.
"""

from __future__ import annotations

import os
from typing import Any

from google.protobuf import message as pbmessage
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st
from meridian.v1 import agent_pb2, image_pb2

EXAMPLES = int(os.environ.get("MERIDIAN_FUZZ_EXAMPLES", "100"))
"""Examples per property (the normal suite stays within its time; raise it for a long run)."""

MODULES = (agent_pb2, image_pb2)


def all_messages() -> list[type[pbmessage.Message]]:
    """Every message class of every ``meridian/v1/*.proto``."""
    found: list[type[pbmessage.Message]] = []
    for module in MODULES:
        for name in module.DESCRIPTOR.message_types_by_name:
            found.append(getattr(module, name))
    return found


_INTS: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _int(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = st.sampled_from([lo, hi, 0, 1, -1 if lo < 0 else 2, 2**31, 1 << 20])
    return st.one_of(edges.filter(lambda n: lo <= n <= hi), st.integers(lo, hi))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t in _INTS:
        return _int(*_INTS[t])
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32 if t == 2 else 64)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.text(max_size=40), st.sampled_from(["", "../x", "a\n", "x" * 300]))
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    raise AssertionError(f"unhandled field type {t} of {field.full_name}")


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _message(field.message_type, depth + 1)
    return _scalar(field)


def _field(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name[
            "value"
        ]
        return st.dictionaries(_scalar(key), _value(value, depth), max_size=3)
    if field.is_repeated:
        return st.lists(_value(field, depth), max_size=3)
    return _value(field, depth)


def _message(desc: Descriptor, depth: int) -> st.SearchStrategy[pbmessage.Message]:
    cls = _class_of(desc)
    if depth > 3:
        return st.just(cls())
    fields = {f.name: _field(f, depth) for f in desc.fields}
    return st.fixed_dictionaries({}, optional=fields).map(lambda kw: _build(cls, kw))


def _class_of(desc: Descriptor) -> type[pbmessage.Message]:
    for module in MODULES:
        found = getattr(module, desc.name, None)
        if found is not None and found.DESCRIPTOR is desc:
            return found  # type: ignore[no-any-return]
    raise AssertionError(f"no class for {desc.full_name}")


def _build(cls: type[pbmessage.Message], values: dict[str, Any]) -> pbmessage.Message:
    msg = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        target = getattr(msg, name) if field.is_repeated else None
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, pbmessage.Message):
                    target[k].CopyFrom(v)  # type: ignore[index]
                else:
                    target[k] = v  # type: ignore[index]
        elif isinstance(value, list):
            for v in value:
                if isinstance(v, pbmessage.Message):
                    target.add().CopyFrom(v)  # type: ignore[union-attr]
                else:
                    target.append(v)  # type: ignore[union-attr]
        elif isinstance(value, pbmessage.Message):
            getattr(msg, name).CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


def messages(cls: type[pbmessage.Message]) -> st.SearchStrategy[Any]:
    """Random messages of ``cls``, every field drawn."""
    return _message(cls.DESCRIPTOR, 0)


def raw_bytes(cls: type[pbmessage.Message]) -> st.SearchStrategy[bytes]:
    """Bytes a decoder of ``cls`` may meet: random, truncated, flipped, padded."""
    valid = messages(cls).map(lambda m: m.SerializeToString())

    def cut(data: bytes, at: int) -> bytes:
        return data[: at % (len(data) + 1)]

    def flip(data: bytes, at: int) -> bytes:
        if not data:
            return b"\xff"
        i = at % len(data)
        return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]

    return st.one_of(
        st.binary(max_size=256),
        st.builds(cut, valid, st.integers(0, 1 << 16)),
        st.builds(flip, valid, st.integers(0, 1 << 16)),
        st.builds(lambda d, junk: d + junk, valid, st.binary(min_size=1, max_size=32)),
        # a length prefix claiming far more than follows (an "oversized" field)
        st.sampled_from([b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x80\x80\x80\x80\x08x"]),
    )
