"""The replication controller costs etcd nothing in steady state (issue 16).

Real etcd, N sites with a settled image: the controller decides from what it watches
(``follow`` on ``images/``, ``sites/``, ``sitestatus/``, ``observed/``), so over a steady
window with many passes not one Store call reaches etcd (counted at our Store seam, around
the real etcd store); and it still acts on a change it only saw through the watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest

from broker.controllers.images import ImageController
from broker.models import codec
from broker.models.site import SiteSpec
from broker.store import keys
from broker.store.etcd import EtcdStore
from broker.store.protocol import Store
from replication import catalog
from replication.catalog import Entry, Image, ImageId, Replica, SiteId
from tests.support.minicloud import wait_for

pytestmark = [pytest.mark.etcd]

SITES = ["src", *(f"site-{i}" for i in range(29))]
DATA = b"meridian" * 1000
SHA = hashlib.sha256(DATA).hexdigest()
WINDOW = 3.0  # seconds of steady state measured
PASS_EVERY = 0.1  # the controller's pass interval: many passes in the window


class Counting:
    """Our Store seam with a tally: every call but ``watch_prefix`` (one stream, opened
    once) is one etcd request."""

    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if name == "watch_prefix" or not callable(attr):
            return attr

        def counted(*args: Any, **kw: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kw)

        return counted


async def settled(store: EtcdStore) -> int:
    """N registered, connected sites each holding an active, audited replica; the fence."""
    await store.put(keys.LEADER, b"broker-1")
    leader = await store.get(keys.LEADER)
    assert leader is not None
    img = Image(ImageId("img"), "cirros", len(DATA), SHA, SiteId("src"))
    entry = Entry(img, "", tuple(SiteId(s) for s in SITES[1:]))
    await store.put(keys.image(img.id), entry.encode())
    audit = json.dumps({"held": {"img": {"sha256": SHA, "size": len(DATA)}}, "busy": []})
    for site in SITES:
        await store.put(keys.site(site), codec.encode(SiteSpec(id=site, region="r1")))
        await store.put(keys.sitestatus(site), b"{}")
        r = Replica(img.id, SiteId(site), generation=entry.generation).queue()
        active = r.start(source="src").verify().activate(len(DATA))
        await store.put(keys.image_replica(img.id, site), catalog.encode_replica(active))
        await store.put(keys.image_audit(site), audit.encode())
    return leader.create_revision


async def state_of(store: EtcdStore, site: str) -> str:
    kv = await store.get(keys.image_replica("img", site))
    assert kv is not None
    return catalog.decode_replica(kv.value).state.value


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def checked() -> bool:
        return check()

    return checked


@contextlib.asynccontextmanager
async def running(ctl: ImageController) -> AsyncIterator[None]:
    task = asyncio.create_task(ctl.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_steady_state_sends_no_request_to_etcd_and_changes_still_act(
    etcd_store: EtcdStore,
) -> None:
    fence = await settled(etcd_store)
    counting = Counting(etcd_store)
    ctl = ImageController(cast(Store, counting), fence, interval=PASS_EVERY)
    passes = 0
    reconcile = ctl.reconcile

    async def counted_pass(*args: Any) -> int:
        nonlocal passes
        passes += 1
        return await reconcile(*args)

    ctl.reconcile = counted_pass  # type: ignore[method-assign]
    async with running(ctl):
        await wait_for(_async(lambda: passes >= 3), within=30, interval=0.05)  # settled
        assert {s: await state_of(etcd_store, s) for s in SITES} == dict.fromkeys(SITES, "active")
        before, passes_before = sum(counting.calls.values()), passes
        await asyncio.sleep(WINDOW)
        during = sum(counting.calls.values()) - before
        steady_passes = passes - passes_before
        # before issue 16 every pass read 3 prefixes + 2 keys per connected site
        assert steady_passes >= 5, f"only {steady_passes} passes in {WINDOW}s"
        assert during == 0, f"{during} etcd requests in {steady_passes} passes: {counting.calls}"

        # a change seen only through the watch is acted on: the audit loses the image
        listed = counting.calls.copy()  # the four listings at start
        await etcd_store.put(keys.image_audit("site-3"), b'{"held": {}, "busy": []}')

        async def requeued() -> bool:
            return await state_of(etcd_store, "site-3") != "active"

        await wait_for(requeued, within=30, interval=0.1)
        assert await state_of(etcd_store, "site-3") in ("queued", "transferring")
        acting = counting.calls - listed
        assert set(acting) == {"txn"}, acting  # its writes, no reads
