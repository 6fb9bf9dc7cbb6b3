"""Helpers the routes share for reading what the store holds.

Invariant: a value in etcd that does not decode is the broker's problem, not the
caller's — it surfaces as a 500 naming the key, never as a 422 blaming the request.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from broker import errors
from broker.models import codec
from broker.store import keys
from broker.store.protocol import KeyValue

T = TypeVar("T")


def decode_stored(cls: type[T], kv: KeyValue) -> T:
    try:
        return codec.decode(cls, kv.value)
    except errors.InvalidInput as exc:
        raise errors.BrokerError(f"the value stored at {kv.key!r} is corrupt: {exc}") from exc


def as_json(value: Any) -> dict[str, Any]:
    """A domain dataclass as a JSON-ready dict."""
    out: dict[str, Any] = dataclasses.asdict(value)
    return out


def by_suffix(items: list[KeyValue], prefix: str) -> dict[str, KeyValue]:
    return {keys.name_in(prefix, kv.key): kv for kv in items}
