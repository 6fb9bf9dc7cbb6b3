"""Counting what a test's code asks of a seam (an in-memory store's method), the call
itself left as it was."""

from __future__ import annotations

from typing import Any

import pytest


def first_args(monkeypatch: pytest.MonkeyPatch, obj: object, method: str) -> list[Any]:
    """The first argument of every later call of the async ``obj.method``, in order."""
    seen: list[Any] = []
    original = getattr(obj, method)

    async def counted(first: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(first)
        return await original(first, *args, **kwargs)

    monkeypatch.setattr(obj, method, counted)
    return seen
