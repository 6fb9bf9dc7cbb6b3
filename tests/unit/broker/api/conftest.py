"""The API under test: ``create_app`` over a MemoryStore, called in-process over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from broker.store.memory import MemoryStore
from tests.unit.broker.api.apitest_support import client_for


@pytest.fixture
async def memstore() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    yield store
    await store.close()


@pytest.fixture
async def api(memstore: MemoryStore) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(memstore) as client:
        yield client
