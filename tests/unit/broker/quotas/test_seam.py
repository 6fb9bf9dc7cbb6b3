"""The quota seam: store errors become quota errors once (in ``StoreLedger``) and never
turn back; the API's one problem table answers every quota error; the API and the
controllers share one ledger per replica."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker import errors
from broker import quotas as quota_seam
from broker.api import problems
from broker.api.app import create_app
from broker.api.auth import DevAuthenticator
from broker.quotas.headroom import LedgerHeadroom
from broker.settings import BrokerSettings
from broker.store.memory import MemoryStore
from quota import errors as quota_errors


async def test_an_unreachable_store_is_one_quota_error_from_the_ledger_to_the_caller() -> None:
    store = MemoryStore()
    seam = quota_seam.build(store, BrokerSettings())
    assert isinstance(seam.headroom, LedgerHeadroom) and seam.headroom.ledger is seam.ledger
    store.set_unavailable(True)
    with pytest.raises(quota_errors.LedgerUnavailable) as caught:
        await seam.headroom.reserve("t1", {"cores": 1}, key="v1")
    # translated once, where the store meets the ledger; the broker error is its cause
    found: BaseException | None = caught.value
    chain = []
    while found is not None:
        chain.append(type(found))
        found = found.__cause__
    assert chain[-1] is errors.StoreUnavailable
    assert all(issubclass(c, quota_errors.QuotaError) for c in chain[:-1])
    answer = problems.from_error(caught.value)
    assert answer.status_code == 503 and "Retry-After" in answer.headers


@pytest.mark.parametrize(
    ("exc", "status", "slug", "field"),
    [
        (quota_errors.QuotaExceeded(tenant="t", resource="cores", requested=4, left=1, limit=8,
                                    used=7, reserved=0), 409, "quota-exceeded", "deltas.cores"),
        (quota_errors.InvalidQuota("limits.cores", "must be >= 0"), 422, "invalid-input",
         "limits.cores"),
        (quota_errors.ReservationExpired("t", "r1"), 410, "reservation-expired", None),
        (quota_errors.ReservationConflict("t", "r1", "settled"), 409, "reservation-conflict",
         None),
        (quota_errors.Contended("busy", retry_after=0.2), 503, "unavailable", None),
    ],
)
def test_the_problem_table_answers_every_quota_error(
    exc: quota_errors.QuotaError, status: int, slug: str, field: str | None
) -> None:
    answer = problems.from_error(exc)
    body = json.loads(answer.body)
    assert (answer.status_code, body["type"].rsplit(":", 1)[-1], body.get("field")) == (
        status, slug, field
    )
    if status == 409 and slug == "quota-exceeded":
        assert (body["requested"], body["left"], body["limit"]) == (4, 1, 8)


def test_the_api_uses_the_seam_it_is_given(tmp_path: Path) -> None:
    store = MemoryStore()
    seam = quota_seam.build(store, BrokerSettings())
    auth = DevAuthenticator(tmp_path / "tokens")
    app = create_app(store, BrokerSettings(), replica="r", auth=auth, quotas=seam)
    assert app.state.api.quotas is seam
