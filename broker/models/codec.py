"""JSON encoding of domain dataclasses for etcd values and API bodies.

Decoding validates (pydantic over the stdlib dataclasses), so a corrupt or foreign value
in etcd surfaces as ``InvalidInput`` naming the field, never as a half-built object.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

import pydantic

from broker import errors

T = TypeVar("T")


def encode(value: Any) -> bytes:
    """A dataclass instance as compact JSON bytes."""
    return json.dumps(dataclasses.asdict(value), separators=(",", ":"), sort_keys=True).encode()


_adapters: dict[type[Any], pydantic.TypeAdapter[Any]] = {}


def _adapter(cls: type[T]) -> pydantic.TypeAdapter[T]:
    adapter = _adapters.get(cls)
    if adapter is None:
        adapter = _adapters[cls] = pydantic.TypeAdapter(cls)
    return adapter


def decode(cls: type[T], data: bytes | str | dict[str, Any]) -> T:
    """Validate and build a ``cls`` from JSON bytes/str or a dict."""
    try:
        if isinstance(data, dict):
            return _adapter(cls).validate_python(data)
        return _adapter(cls).validate_json(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or cls.__name__
        raise errors.InvalidInput(field, first["msg"]) from exc
