"""The delay a refused stream's status names in its trailer (busy replica, etcd down)."""

from __future__ import annotations

import grpc
import pytest

from siteagent.session import RETRY_AFTER_MS, retry_after


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
