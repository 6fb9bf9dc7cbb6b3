"""Fixtures shared by every test tier: real etcd, and the two Store implementations.

``etcd_server`` is one real etcd member for the whole session; ``etcd_store`` gives each
test its own root prefix on it, so tests never see each other's keys, through the client
the settings choose by default (``etcd.client``). ``store`` runs a test against the
in-memory fake and etcd through each client, threaded and asyncio (the Store contract).
Tests that touch etcd carry ``pytest.mark.etcd`` (added here too, for tests that use the fixtures).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from tests.support import etcd as etcd_support

from broker.settings import EtcdSettings
from broker.store.client import CLIENTS, EtcdClient
from broker.store.etcd import EtcdStore
from broker.store.etcdaio import AsyncEtcdStore
from broker.store.memory import MemoryStore
from broker.store.protocol import Store

ETCD_FIXTURES = {"etcd_server", "etcd_store", "threaded_etcd_store", "async_etcd_store"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if ETCD_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.etcd)


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[etcd_support.Cluster]:
    """One real etcd member on a free loopback port, for the whole session."""
    try:
        cluster = etcd_support.start_single()
    except etcd_support.EtcdNotFound as exc:
        pytest.fail(str(exc), pytrace=False)
    yield cluster
    cluster.cleanup()


@pytest.fixture
def etcd_root() -> str:
    """A root prefix no other test uses."""
    return f"/meridian-test/{uuid.uuid4().hex[:12]}/"


@contextlib.asynccontextmanager
async def _opened(
    kind: type[EtcdClient], server: etcd_support.Cluster, root: str
) -> AsyncIterator[EtcdClient]:
    store = kind.from_settings(server.settings(root=root))
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def etcd_store(
    etcd_server: etcd_support.Cluster, etcd_root: str
) -> AsyncIterator[EtcdClient]:
    """etcd through the client the settings choose by default."""
    async with _opened(CLIENTS[EtcdSettings().client], etcd_server, etcd_root) as store:
        yield store


def _client_fixture(kind: type[EtcdClient]) -> Any:
    """A fixture giving each test a store of ``kind`` under its own root."""

    @pytest.fixture
    async def fixture(
        etcd_server: etcd_support.Cluster, etcd_root: str
    ) -> AsyncIterator[EtcdClient]:
        async with _opened(kind, etcd_server, etcd_root) as store:
            yield store

    return fixture


threaded_etcd_store = _client_fixture(EtcdStore)
async_etcd_store = _client_fixture(AsyncEtcdStore)


@pytest.fixture
async def memory_store() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    yield store
    await store.close()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("threaded_etcd", marks=pytest.mark.etcd),
        pytest.param("async_etcd", marks=pytest.mark.etcd),
    ]
)
def store(request: pytest.FixtureRequest) -> Store:
    """The Store contract runs against the fake and against real etcd, with each client."""
    found: Store = request.getfixturevalue(f"{request.param}_store")
    return found

