"""The replication controller over the in-memory store: what it writes for each thing a
site reports, relay fan-out in O(log N) rounds, drift repair, and fencing."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from broker import errors
from broker.controllers import imageview
from broker.controllers.images import PIECES_WAIT, ImageController, Limits
from broker.models import codec
from broker.models.site import SiteSpec
from broker.store import keys
from broker.store.memory import MemoryStore
from replication import catalog, pieces
from replication.catalog import Entry, Image, ImageId, Replica, SiteId
from tests.support import spy

DATA = b"meridian" * 1000
SHA = hashlib.sha256(DATA).hexdigest()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def federation(sites: list[str], *, region: str = "r1") -> tuple[MemoryStore, int]:
    store = MemoryStore()
    await store.put(keys.LEADER, b"broker-1")
    kv = await store.get(keys.LEADER)
    assert kv is not None
    for site in sites:
        await store.put(keys.site(site), codec.encode(SiteSpec(id=site, region=region)))
        await store.put(keys.sitestatus(site), b"{}")
    return store, kv.create_revision


async def register(
    store: MemoryStore, targets: tuple[str, ...] = (), policy: str = "", sha: str = SHA
) -> Image:
    img = Image(ImageId("img"), "cirros", len(DATA), sha, SiteId("src"))
    entry = Entry(img, policy, tuple(SiteId(t) for t in targets))
    await store.put(keys.image(img.id), entry.encode())
    return img


async def audit(
    store: MemoryStore, site: str, held: dict[str, str], busy: tuple[str, ...] = ()
) -> None:
    body = {
        "held": {i: {"sha256": s, "size": len(DATA)} for i, s in held.items()},
        "busy": list(busy),
    }
    await store.put(keys.image_audit(site), json.dumps(body).encode())


async def report(store: MemoryStore, site: str, attempt: int, state: str, **kw: object) -> None:
    """A report on ``attempt`` of generation 1 (as its ``Replica.ticket``)."""
    body = {"attempt": 1_000_000 + attempt, "state": state, **kw}
    await store.put(keys.image_copy(site, "img"), json.dumps(body).encode())


async def replicas(store: MemoryStore) -> dict[str, Replica]:
    kvs, _ = await store.get_prefix(keys.image_replicas("img"))
    return {kv.key.rsplit("/", 1)[1]: catalog.decode_replica(kv.value) for kv in kvs}


async def states(store: MemoryStore) -> dict[str, str]:
    return {s: r.state.value for s, r in (await replicas(store)).items()}


async def events(store: MemoryStore) -> list[dict[str, str]]:
    kvs, _ = await store.get_prefix(keys.EVENTS)
    return [json.loads(kv.value) for kv in kvs]


async def settled_source(sites: list[str], **limits: int) -> tuple[MemoryStore, ImageController]:
    store, fence = await federation(["src", *sites])
    await register(store, tuple(sites))
    ctl = ImageController(store, fence, limits=Limits(**limits))
    await ctl.reconcile()  # replicas queued
    await audit(store, "src", {"img": SHA})
    await ctl.reconcile()  # source active from its audit, copies assigned
    return store, ctl


async def test_source_is_activated_by_its_audit_and_copies_start_from_it() -> None:
    store, fence = await federation(["src", "a"])
    await register(store, ("a",))
    ctl = ImageController(store, fence)
    await ctl.reconcile()
    assert await states(store) == {"src": "queued", "a": "queued"}
    await audit(store, "src", {"img": SHA})
    await ctl.reconcile()
    reps = await replicas(store)
    assert reps["src"].state.value == "active" and reps["src"].sha256 == SHA
    assert reps["a"].state.value == "transferring"
    assert (reps["a"].source, reps["a"].attempts) == ("src", 1)


async def test_an_audit_older_than_the_registration_does_not_judge_the_source() -> None:
    store, fence = await federation(["src", "a"])
    await audit(store, "src", {})  # taken before the image was placed
    await register(store, ("a",))
    ctl = ImageController(store, fence)
    await ctl.reconcile()
    await ctl.reconcile()
    assert (await states(store))["src"] == "queued"


async def test_progress_then_active_with_the_catalog_digest() -> None:
    store, ctl = await settled_source(["a"])
    await report(store, "a", 1, "transferring", offset=4000, rate=1e6)
    await ctl.reconcile()
    a = (await replicas(store))["a"]
    assert (a.state.value, a.offset, a.rate) == ("transferring", 4000, 1e6)
    await report(store, "a", 1, "active", sha256=SHA)
    await ctl.reconcile()
    a = (await replicas(store))["a"]
    assert (a.state.value, a.offset, a.sha256) == ("active", len(DATA), SHA)


async def test_an_active_report_with_another_digest_fails_and_is_never_activated() -> None:
    store, ctl = await settled_source(["a"])
    await report(store, "a", 1, "active", sha256="0" * 64)
    await ctl.reconcile()
    a = (await replicas(store))["a"]
    assert a.state.value == "failed" and "does not match" in a.reason
    assert any(e["kind"] == "image.failed" for e in await events(store))


async def test_a_report_of_an_older_attempt_is_ignored() -> None:
    store, ctl = await settled_source(["a"])
    await report(store, "a", 0, "active", sha256=SHA)
    await ctl.reconcile()
    assert (await states(store))["a"] == "transferring"


async def test_temporary_failures_retry_until_the_attempt_limit() -> None:
    store, ctl = await settled_source(["a"], max_attempts=2)
    await report(store, "a", 1, "failed", reason="PeerGone: cut", temporary=True)
    await ctl.reconcile()  # re-queued and re-assigned in the same pass
    a = (await replicas(store))["a"]
    assert (a.state.value, a.attempts) == ("transferring", 2)
    await report(store, "a", 2, "failed", reason="PeerGone: cut again", temporary=True)
    await ctl.reconcile()
    a = (await replicas(store))["a"]
    assert (a.state.value, a.reason) == ("failed", "PeerGone: cut again")


async def test_a_permanent_failure_stays_until_a_new_request() -> None:
    store, ctl = await settled_source(["a"])
    await report(store, "a", 1, "failed", reason="CacheFull: no room", temporary=False)
    await ctl.reconcile()
    assert (await states(store))["a"] == "failed"
    await ctl.reconcile()
    assert (await states(store))["a"] == "failed"
    kv = await store.get(keys.image("img"))
    assert kv is not None
    entry = Entry.decode(kv.value)
    bumped = Entry(entry.image, entry.policy, entry.targets, entry.generation + 1)
    await store.put(keys.image("img"), bumped.encode())
    await ctl.reconcile()
    a = (await replicas(store))["a"]
    assert (a.state.value, a.attempts, a.generation) == ("transferring", 1, 2)
    await report(store, "a", 1, "active", sha256=SHA)  # generation 1's attempt 1: stale
    await ctl.reconcile()
    assert (await states(store))["a"] == "transferring"


async def test_a_site_that_disconnects_mid_copy_is_requeued() -> None:
    store, ctl = await settled_source(["a"])
    await store.delete(keys.sitestatus("a"))
    await ctl.reconcile()
    a = (await replicas(store))["a"]
    assert a.state.value == "queued" and "disconnected" in a.reason


async def test_a_silent_copy_is_requeued_after_the_stall_bound() -> None:
    clock = Clock()
    store, fence = await federation(["src", "a"])
    await register(store, ("a",))
    ctl = ImageController(store, fence, limits=Limits(stall_after=30.0), clock=clock)
    await ctl.reconcile()
    await audit(store, "src", {"img": SHA})
    await ctl.reconcile()
    await ctl.reconcile()
    clock.now = 29.0
    await ctl.reconcile()
    assert (await states(store))["a"] == "transferring"
    clock.now = 31.0
    await ctl.reconcile()  # re-queued, then assigned again as attempt 2
    assert (await replicas(store))["a"].attempts == 2


async def test_relay_fan_out_uses_log_rounds() -> None:
    sites = [f"s{i:02d}" for i in range(15)]
    store, ctl = await settled_source(sites, cap=1)
    rounds = 1
    while True:
        reps = await replicas(store)
        copying = {s: r for s, r in reps.items() if r.state.value == "transferring"}
        if not copying:
            break
        holders = {s for s, r in reps.items() if r.state.value == "active"}
        assert len(copying) == len(holders), "each holder serves exactly one copy (cap 1)"
        assert {r.source for r in copying.values()} == holders
        for site, r in copying.items():
            await report(store, site, r.attempts, "active", sha256=SHA)
        await ctl.reconcile()
        rounds += 1
    assert set((await states(store)).values()) == {"active"}
    assert rounds - 1 <= math.ceil(math.log2(len(sites) + 1))


async def test_policy_selects_sites_by_region() -> None:
    store, fence = await federation(["src"])
    for site, region in (("eu-1", "eu"), ("eu-2", "eu"), ("us-1", "us")):
        await store.put(keys.site(site), codec.encode(SiteSpec(id=site, region=region)))
    await register(store, policy="region=eu")
    await ImageController(store, fence).reconcile()
    assert set(await states(store)) == {"src", "eu-1", "eu-2"}


async def test_drift_missing_or_corrupt_is_requeued_with_an_event() -> None:
    store, ctl = await settled_source(["a", "b", "c"], cap=3)
    for site in ("a", "b", "c"):
        await report(store, site, 1, "active", sha256=SHA)
    await ctl.reconcile()
    assert set((await states(store)).values()) == {"active"}
    await audit(store, "a", {})  # missing
    await audit(store, "b", {"img": "f" * 64})  # corrupt
    await audit(store, "c", {}, busy=("img",))  # copying while audited: not judged
    await ctl.reconcile()
    reps = await replicas(store)
    assert reps["a"].repairs == 1 and "missing" in reps["a"].reason
    assert reps["b"].repairs == 1 and "f" * 64 in reps["b"].reason
    assert reps["a"].state.value == "transferring" and reps["a"].attempts == 2
    assert reps["c"].state.value == "active" and reps["c"].repairs == 0
    drift = [e for e in await events(store) if e["kind"] == "image.drift"]
    assert {e["subject"] for e in drift} == {"a", "b"}


async def test_a_source_with_wrong_bytes_fails_with_the_reason() -> None:
    store, fence = await federation(["src", "a"])
    await register(store, ("a",))
    ctl = ImageController(store, fence)
    await ctl.reconcile()
    await audit(store, "src", {"img": "e" * 64})
    await ctl.reconcile()
    reps = await replicas(store)
    assert reps["src"].state.value == "failed"
    assert "do not match the registered checksum" in reps["src"].reason
    assert reps["a"].state.value == "queued", "nothing to copy from: the rest waits"


async def test_a_source_whose_bytes_changed_while_audited_is_judged_by_the_next_audit() -> None:
    store, fence = await federation(["src", "a"])
    await register(store, ("a",))
    ctl = ImageController(store, fence)
    await ctl.reconcile()
    await audit(store, "src", {}, busy=("img",))  # the site was still writing the file
    await ctl.reconcile()
    assert (await replicas(store))["src"].state.value == "queued", "not judged: busy"
    await audit(store, "src", {"img": SHA})
    await ctl.reconcile()
    assert (await replicas(store))["src"].state.value == "active"


async def test_a_source_that_lost_its_copy_is_refilled_from_another_holder() -> None:
    store, ctl = await settled_source(["a"])
    await report(store, "a", 1, "active", sha256=SHA)
    await ctl.reconcile()
    await audit(store, "src", {})
    await ctl.reconcile()
    src = (await replicas(store))["src"]
    assert (src.state.value, src.source, src.repairs) == ("transferring", "a", 1)


async def test_a_deposed_leader_writes_nothing() -> None:
    store, fence = await federation(["src", "a"])
    await register(store, ("a",))
    await store.delete(keys.LEADER)
    await store.put(keys.LEADER, b"broker-2")  # a new term: another fence
    with pytest.raises(errors.FencedOut):
        await ImageController(store, fence).reconcile()
    assert await replicas(store) == {}


async def test_a_vnf_image_status_is_not_a_replica_report(caplog: pytest.LogCaptureFixture) -> None:
    """A VNF's ``image`` object and image replication are two kinds: the status the gateway
    writes for a VNF image (``observed/<site>/image/<vnf>-<name>``) is never read as a copy
    report (it was, and every pass logged it as corrupt)."""
    store, ctl = await settled_source(["a"])
    vnf_image = {  # what the gateway stores for an agent's ObjectStatus of kind "image"
        "kind": "image",
        "name": "vnf1-vfw",
        "observed_generation": 1,
        "state": "READY",
        "message": "",
        "temporary": False,
        "outputs": {"id": "x"},
        "at_ms": 1,
    }
    await store.put(keys.observed("a", "image", "vnf1-vfw"), json.dumps(vnf_image).encode())
    await store.put(keys.observed("a", "image", "img"), json.dumps(vnf_image).encode())
    before = (await replicas(store))["a"]
    with caplog.at_level("ERROR"):
        await ctl.reconcile()
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
    after = (await replicas(store))["a"]
    assert (after.state, after.offset) == (before.state, before.offset)
    await report(store, "a", 1, "transferring", offset=4000, rate=1e6)
    await ctl.reconcile()
    assert (await replicas(store))["a"].offset == 4000


async def site_audit(store: MemoryStore, site: str, address: str, held: bool = False) -> None:
    body = {
        "held": {"img": {"sha256": SHA, "size": len(DATA)}} if held else {},
        "direct_address": address,
    }
    await store.put(keys.image_audit(site), json.dumps(body).encode())


async def piece_report(store: MemoryStore, sha: str = SHA, data: bytes = DATA) -> None:
    listed = json.dumps(pieces.manifest_of(data, 1024).to_dict())
    await store.put(
        keys.piece_report("src", "img"), json.dumps({"sha256": sha, "pieces": listed}).encode()
    )


async def swarm_world() -> tuple[MemoryStore, ImageController, Clock]:
    store, fence = await federation(["src", "a", "b", "nat"])
    await register(store, ("a", "b", "nat"))
    clock = Clock()
    ctl = ImageController(store, fence, limits=Limits(cap=1), clock=clock)
    await ctl.reconcile()
    for site in ("a", "b"):
        await site_audit(store, site, f"{site}:7500")
    await site_audit(store, "nat", "")
    return store, ctl, clock


async def test_the_source_piece_list_is_recorded_and_sites_serving_directly_swarm() -> None:
    """The tracker: the source's piece list for the catalog's bytes recorded (fenced);
    every destination that serves directly starts a swarm copy at once (the per-source cap
    is for one-source copies), the one behind NAT a one-source copy."""
    store, ctl, _ = await swarm_world()
    await piece_report(store)
    await site_audit(store, "src", "src:7500", held=True)
    await ctl.reconcile()  # the source active; swarmers wait for its piece list
    assert {s: r.state.value for s, r in (await replicas(store)).items()}["a"] == "queued"
    await ctl.reconcile()
    kv = await store.get(keys.image_pieces("img"))
    assert kv is not None
    assert pieces.Manifest.from_dict(json.loads(kv.value)) == pieces.manifest_of(DATA, 1024)
    reps = await replicas(store)
    assert {s: (r.state.value, r.swarm) for s, r in reps.items()} == {
        "src": ("active", False),
        "a": ("transferring", True),
        "b": ("transferring", True),
        "nat": ("transferring", False),
    }
    assert reps["a"].source == reps["b"].source == reps["nat"].source == "src"


@pytest.mark.parametrize("wrong", ["sha", "size"])
async def test_a_piece_list_for_other_bytes_is_never_recorded_and_swarmers_stop_waiting(
    wrong: str,
) -> None:
    """A report for other bytes is not the catalog's; destinations that could swarm wait
    for a piece list only ``PIECES_WAIT`` seconds, then copy from one source."""
    store, ctl, clock = await swarm_world()
    if wrong == "sha":
        await piece_report(store, sha="0" * 64)
    else:
        await piece_report(store, data=DATA + b"!")
    await site_audit(store, "src", "src:7500", held=True)
    await ctl.reconcile()
    assert await store.get(keys.image_pieces("img")) is None
    states_now = {s: r.state.value for s, r in (await replicas(store)).items()}
    assert (states_now["a"], states_now["b"], states_now["nat"]) == (
        "queued",
        "queued",
        "transferring",
    )
    clock.now += PIECES_WAIT + 1
    await ctl.reconcile()
    await ctl.reconcile()
    reps = await replicas(store)
    assert not any(r.swarm for r in reps.values())
    assert await store.get(keys.image_pieces("img")) is None


async def test_a_pass_without_followers_reads_each_prefix_once_never_each_site(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The safety resync at 10,000 sites read each site's copies and audit: 20,000
    requests. Now the followed prefixes' listings only, whatever the number of sites --
    and what a site reported is still seen (its audit makes the source active)."""
    sites = [f"edge-{i:03d}" for i in range(200)]
    store, fence = await federation(["src", *sites])
    await register(store, targets=("edge-000",))
    await audit(store, "src", {"img": SHA})
    listed = spy.first_args(monkeypatch, store, "get_prefix")
    read = spy.first_args(monkeypatch, store, "get")
    world = await ImageController(store, fence).load()
    assert sorted(listed) == sorted(imageview.PREFIXES)
    assert read == []
    assert world.audits["src"].held["img"][0] == SHA
    assert len(world.connected) == 201
