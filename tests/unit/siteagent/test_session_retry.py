"""The delay a refused stream's status names in its trailer (busy replica, etcd down), and
the agent's own delays when none is named: longer while attempts time out."""

from __future__ import annotations

import random
from pathlib import Path

import grpc
import pytest

from siteagent import errors, settings
from siteagent.session import JITTER, RETRY_AFTER_MS, backoff, connect_bound, retry_after
from siteagent.settings import SessionSettings


def error(*trailers: tuple[str, str]) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*trailers),
        details="replica busy",
    )


@pytest.mark.parametrize(
    ("trailers", "expected"),
    [
        (((RETRY_AFTER_MS, "2500"),), 2.5),
        ((("other", "1"), (RETRY_AFTER_MS, "40")), 0.04),
        (((RETRY_AFTER_MS, "0"),), None),  # 0 = do not retry as is: the agent's own backoff
        (((RETRY_AFTER_MS, "soon"),), None),  # malformed: ignored, not fatal
        ((), None),
    ],
)
def test_retry_after_from_the_status_trailer(
    trailers: tuple[tuple[str, str], ...], expected: float | None
) -> None:
    assert retry_after(error(*trailers)) == expected


CFG = SessionSettings(
    connect_timeout=15.0,
    connect_timeout_max=120.0,
    backoff_initial=0.1,
    backoff_max=5.0,
    timeout_backoff_max=60.0,
)


@pytest.mark.parametrize(
    ("failures", "timeouts", "cap"),
    [
        (1, 0, 0.2),  # an ordinary failure: the usual doubling from backoff_initial
        (10, 0, 5.0),  # ... capped at backoff_max however many
        (1, 1, 5.0),  # one timeout: at most backoff_max (a frozen replica: move on soon)
        (2, 2, 10.0),  # timeouts in a row: past backoff_max, doubling
        (4, 4, 40.0),
        (9, 9, 60.0),  # ... up to timeout_backoff_max
    ],
)
def test_backoff_stretches_while_attempts_time_out(
    failures: int, timeouts: int, cap: float
) -> None:
    random.seed(7)
    delays = [backoff(CFG, failures, timeouts) for _ in range(2000)]
    assert max(delays) <= cap
    assert max(delays) > 0.9 * cap  # full jitter: the whole range is used
    assert min(delays) < 0.1 * cap + 0.05


@pytest.mark.parametrize(
    ("timeouts", "base"), [(0, 15.0), (1, 30.0), (2, 60.0), (3, 120.0), (8, 120.0)]
)
def test_the_connect_bound_doubles_per_timeout_up_to_its_max(timeouts: int, base: float) -> None:
    bounds = [connect_bound(CFG, timeouts) for _ in range(500)]
    assert base <= min(bounds) and max(bounds) <= base * (1 + JITTER)


def test_a_max_below_the_timeout_is_refused_by_path(tmp_path: Path) -> None:
    with pytest.raises(errors.SettingsError, match=r"session\.connect_timeout_max"):
        settings.load(
            env={},
            overrides={
                "site_id": "s1",
                "tls": {"ca_file": "a", "cert_file": "b", "key_file": "c"},
                "session": {"connect_timeout": 30, "connect_timeout_max": 20},
            },
        )
