"""Both etcd clients against real etcd where it matters: TLS, failover, etcd down and back.

Time bounds are generous safety bounds (a noisy 2-core machine), never performance
claims: "did not hang" means "answered within the timeout plus a wide margin".
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
from tests.support import etcd as etcd_support

from broker import errors
from broker.settings import EtcdSettings
from broker.store import protocol as p
from broker.store.client import CLIENTS, EtcdClient

pytestmark = pytest.mark.etcd

R = TypeVar("R")
TIMEOUT = 1.0  # the store's per-call timeout in these tests
SLACK = 3.0  # what "no hang" tolerates beyond it


@pytest.fixture(scope="module")
def tls_etcd() -> Iterator[etcd_support.Cluster]:
    cluster = etcd_support.start_single(tls=True)
    yield cluster
    cluster.cleanup()


@pytest.fixture
def own_etcd() -> Iterator[etcd_support.Cluster]:
    """A member this test may stop and kill."""
    cluster = etcd_support.start_single()
    yield cluster
    cluster.cleanup()


@pytest.fixture
def etcd_cluster() -> Iterator[etcd_support.Cluster]:
    cluster = etcd_support.start_cluster(3)
    yield cluster
    cluster.cleanup()


class Opener:
    """Opens stores with one client (each test runs once per client); closes them all."""

    def __init__(self, client: str) -> None:
        self.client = client
        self.opened: list[EtcdClient] = []

    def __call__(self, settings: EtcdSettings) -> EtcdClient:
        store = CLIENTS[self.client].from_settings(settings)
        self.opened.append(store)
        return store


@pytest.fixture(params=sorted(CLIENTS))
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Opener]:
    opener = Opener(request.param)
    yield opener
    for store in opener.opened:
        await store.close()


async def until_ok(call: Callable[[], Awaitable[R]], within: float = 20.0) -> R:
    """Retry ``call`` while it raises StoreUnavailable; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except errors.StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def timed_unavailable(call: Callable[[], Awaitable[object]]) -> float:
    """Seconds ``call`` took to raise StoreUnavailable (it must, and not hang)."""
    started = time.monotonic()
    with pytest.raises(errors.StoreUnavailable):
        await asyncio.wait_for(call(), TIMEOUT + 2 * SLACK)
    return time.monotonic() - started


# -- TLS ----------------------------------------------------------------------------------


async def test_tls_with_client_certificate(
    tls_etcd: etcd_support.Cluster, stores: Opener
) -> None:
    store = stores(tls_etcd.settings(root="/tls/"))
    revision = await store.put("sites/a", b"edge")
    watch = store.watch_prefix("sites/", start_revision=revision)
    try:
        event = await asyncio.wait_for(anext(watch), 10)
    finally:
        await watch.aclose()
    assert (event.key, event.value, event.mod_revision) == ("sites/a", b"edge", revision)
    kv = await store.get("sites/a")
    assert kv is not None and kv.value == b"edge"
    lease = await store.grant_lease(5)
    assert await store.refresh_lease(lease.id) > 0
    await store.revoke_lease(lease.id)


async def test_tls_without_client_certificate_is_refused(
    tls_etcd: etcd_support.Cluster, stores: Opener
) -> None:
    settings = tls_etcd.settings(root="/tls/", client_cert=False, timeout=TIMEOUT)
    store = stores(settings)
    assert await timed_unavailable(lambda: store.get("sites/a")) < TIMEOUT + SLACK


async def test_plain_text_client_cannot_talk_to_tls_etcd(
    tls_etcd: etcd_support.Cluster, stores: Opener
) -> None:
    settings = etcd_support.Cluster(tls_etcd.workdir, tls_etcd.members).settings(timeout=TIMEOUT)
    store = stores(settings)
    assert await timed_unavailable(lambda: store.put("k", b"v")) < TIMEOUT + SLACK


# -- failover -----------------------------------------------------------------------------


async def test_failover_when_the_member_in_use_is_killed(
    etcd_cluster: etcd_support.Cluster, stores: Opener
) -> None:
    store = stores(etcd_cluster.settings(root="/fo/", timeout=TIMEOUT))
    written = await store.put("sites/a", b"1")
    used = store.endpoint_in_use
    watch = store.watch_prefix("sites/", start_revision=written + 1)
    watching = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.2)  # let the watch be created on the member in use

    etcd_cluster.kill(etcd_cluster.member_for(used))

    # reads fail over inside the call; writes may need the caller's retry while the
    # surviving members elect a leader
    kv = await until_ok(lambda: store.get("sites/a"))
    assert kv is not None and kv.value == b"1"
    assert store.endpoint_in_use != used
    again = await until_ok(lambda: store.put("sites/b", b"2"))
    assert again > written
    # the watch on the dead member broke loudly; re-watching from the last revision
    # seen misses nothing
    with pytest.raises(errors.StoreUnavailable):
        await asyncio.wait_for(watching, 20)
    await watch.aclose()
    rewatch = store.watch_prefix("sites/", start_revision=written + 1)
    try:
        event = await until_ok(lambda: asyncio.wait_for(anext(rewatch), 10))
    finally:
        await rewatch.aclose()
    assert (event.key, event.mod_revision) == ("sites/b", again)
    kvs, _ = await store.get_prefix("sites/")
    assert [(kv.key, kv.value) for kv in kvs] == [("sites/a", b"1"), ("sites/b", b"2")]


# -- etcd down, then back -----------------------------------------------------------------


async def test_etcd_down_is_store_unavailable_then_back_with_nothing_lost(
    own_etcd: etcd_support.Cluster, stores: Opener
) -> None:
    store = stores(own_etcd.settings(root="/down/", timeout=TIMEOUT))
    written = await store.put("sites/a", b"kept")
    watch = store.watch_prefix("sites/", start_revision=written + 1)
    watching = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.2)

    own_etcd.kill(0)

    with pytest.raises(errors.StoreUnavailable):
        await asyncio.wait_for(watching, TIMEOUT + 2 * SLACK)
    await watch.aclose()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.get("sites/a"),
        lambda: store.get_prefix("sites/"),
        lambda: store.put("sites/b", b"lost?"),
        lambda: store.delete("sites/a"),
        lambda: store.txn([], [p.Put("sites/c", b"x")]),
        lambda: store.grant_lease(5),
        lambda: store.refresh_lease(1),
    ]
    for call in calls:
        assert await timed_unavailable(call) < TIMEOUT + SLACK

    own_etcd.restart(0)

    kv = await until_ok(lambda: store.get("sites/a"))
    assert kv is not None and kv.value == b"kept" and kv.mod_revision == written
    after = await until_ok(lambda: store.put("sites/d", b"new"))
    assert after > written
    kvs, _ = await store.get_prefix("sites/")
    assert [kv.key for kv in kvs] == ["sites/a", "sites/d"]


async def test_a_frozen_etcd_times_out_instead_of_hanging(
    own_etcd: etcd_support.Cluster, stores: Opener
) -> None:
    store = stores(own_etcd.settings(root="/frozen/", timeout=TIMEOUT))
    await store.put("k", b"v")
    own_etcd.members[0].freeze()
    try:
        elapsed = await timed_unavailable(lambda: store.get("k"))
        assert TIMEOUT * 0.5 < elapsed < TIMEOUT + SLACK
        assert await timed_unavailable(lambda: store.put("k", b"w")) < TIMEOUT + SLACK
    finally:
        own_etcd.members[0].signal(signal.SIGCONT)
    kv = await until_ok(lambda: store.get("k"))
    # A write that timed out has an unknown outcome: the request may sit in the frozen
    # server's socket and be applied when it wakes. Nothing else may appear.
    assert kv is not None and kv.value in (b"v", b"w"), kv
