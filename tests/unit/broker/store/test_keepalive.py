"""The lease keeper: keeps asked-about leases alive on its own thread, and says so only
when that is true. ``refresh`` is a fake at our own seam (the etcd call is tested in
tests/integration/test_etcd_lease_lane.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from broker.store import keepalive
from broker.store.keepalive import Keeper


class Etcd:
    """What the keeper's refresh reaches: leases that may fail or go."""

    def __init__(self, ttl: int = 1) -> None:
        self.ttl = ttl
        self.calls: list[int] = []
        self.down = False
        self.gone: set[int] = set()
        self.lock = threading.Lock()

    def refresh(self, lease_id: int) -> int:
        with self.lock:
            self.calls.append(lease_id)
        if self.down:
            raise ConnectionError("etcd unreachable (test)")
        if lease_id in self.gone:
            raise keepalive.Gone(f"lease {lease_id:x} is gone")
        return self.ttl


@pytest.fixture
def etcd() -> Etcd:
    return Etcd(ttl=1)


@pytest.fixture
def keeper(etcd: Etcd) -> Iterator[Keeper]:
    k = Keeper(etcd.refresh)
    yield k
    k.stop()


def until(probe: Callable[[], object], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not probe():
        assert time.monotonic() < deadline, "did not happen in time"
        time.sleep(0.01)


def test_unknown_leases_are_not_vouched_for(keeper: Keeper) -> None:
    assert keeper.cached(7) is None


def test_kept_while_asked_and_answered_from_the_last_success(keeper: Keeper, etcd: Etcd) -> None:
    keeper.keep(7, ttl=1, sent=time.monotonic())
    for _ in range(6):  # ~1.2 s: longer than the TTL, asked all the while
        until(lambda: keeper.refreshes >= 1)
        time.sleep(0.2)
        keeper.cached(7)
    assert keeper.refreshes >= 3 and set(etcd.calls) == {7}


def test_cached_never_overstates_the_remaining_ttl(etcd: Etcd) -> None:
    etcd.ttl = 3
    keeper = Keeper(etcd.refresh)
    try:
        sent = time.monotonic()
        keeper.keep(9, ttl=3, sent=sent)
        got = keeper.cached(9)
        assert got is not None and time.monotonic() + got <= sent + 3
        assert got == 2  # whole seconds, rounded down
    finally:
        keeper.stop()


def test_a_failed_attempt_keeps_the_last_success_until_its_margin_is_gone(
    keeper: Keeper, etcd: Etcd
) -> None:
    etcd.ttl = 3
    sent = time.monotonic()
    keeper.keep(7, ttl=3, sent=sent)
    etcd.down = True
    until(lambda: len(etcd.calls) >= 1, within=5)  # the first background attempt failed
    if time.monotonic() < sent + 3 - keepalive.MIN_CACHED - 0.2:
        got = keeper.cached(7)  # the lease cannot have run out: still vouched for
        assert got is not None and time.monotonic() + got <= sent + 3
    until(lambda: keeper.cached(7) is None, within=5)  # less than MIN_CACHED left
    assert time.monotonic() >= sent + 3 - keepalive.MIN_CACHED
    etcd.down = False
    until(lambda: keeper.cached(7) is not None, within=5)


def test_a_lease_found_gone_is_reported_gone(keeper: Keeper, etcd: Etcd) -> None:
    keeper.keep(7, ttl=1, sent=time.monotonic())
    etcd.gone.add(7)

    def reported_gone() -> bool:
        try:
            keeper.cached(7)
        except keepalive.Gone:
            return True
        return False

    until(reported_gone, within=5)
    assert keeper.cached(7) is None  # reported once, then forgotten


def test_unasked_leases_are_dropped_so_a_wedged_process_loses_them(etcd: Etcd) -> None:
    keeper = Keeper(etcd.refresh, demand_s=0.0)  # the TTL-based floor alone
    try:
        keeper.keep(7, ttl=1, sent=time.monotonic())
        time.sleep(keepalive.DEMAND_TTLS * 1 + 0.8)  # nobody asks
        calls = len(etcd.calls)
        assert calls >= 1
        time.sleep(1.0)
        assert len(etcd.calls) == calls, "a lease nobody asks about must not be kept"
        assert keeper.cached(7) is None
    finally:
        keeper.stop()


def test_a_loop_blocked_for_seconds_still_finds_its_lease_kept(etcd: Etcd) -> None:
    """Many TTLs without an ask (a loop blocked by a connect storm) within ``demand_s``:
    the lease is still kept; beyond it, dropped."""
    etcd.ttl = 2
    keeper = Keeper(etcd.refresh, demand_s=5.0)
    try:
        keeper.keep(7, ttl=2, sent=time.monotonic())
        time.sleep(4.5)  # more than DEMAND_TTLS TTLs unasked, less than demand_s
        assert keeper.cached(7) is not None
        assert len(etcd.calls) >= 5
        time.sleep(5.5)
        assert keeper.cached(7) is None
    finally:
        keeper.stop()


def test_forget_and_stop_end_the_keeping(keeper: Keeper, etcd: Etcd) -> None:
    keeper.keep(7, ttl=1, sent=time.monotonic())
    keeper.forget(7)
    assert keeper.cached(7) is None
    keeper.stop()
    keeper.keep(8, ttl=1, sent=time.monotonic())  # after stop: ignored
    time.sleep(0.6)
    assert 8 not in etcd.calls


def test_lease_ttls_are_settings_and_bad_ones_are_refused_by_path() -> None:
    from broker import errors, settings

    loaded = settings.load(
        env={"MERIDIAN_ELECTION__LEASE_TTL": "4", "MERIDIAN_GATEWAY__LEASE_TTL": "6"}
    )
    assert (loaded.election.lease_ttl, loaded.gateway.lease_ttl) == (4, 6)
    with pytest.raises(errors.SettingsError) as caught:
        settings.load(env={"MERIDIAN_ELECTION__LEASE_TTL": "1", "MERIDIAN_GATEWAY__LEASE_TTL": "x"})
    text = "\n".join(caught.value.problems)
    assert "election.lease_ttl" in text and "gateway.lease_ttl" in text
