"""Fuzzing the served OpenAPI document with schemathesis: 0 server errors, every refusal
a documented 4xx with an RFC 9457 problem+json body.

Every operation of the document is fuzzed in each auth mode (no token, a forged token,
an admin token, a member token) over ASGI against an in-memory store seeded with sites,
so requests reach the routes' logic and not only their validation. Bounded for the
normal suite (``MERIDIAN_FUZZ_EXAMPLES`` examples per operation and mode, 20 by
default); ``MERIDIAN_FUZZ_EXAMPLES=500`` is the long run. The last test prints the
totals: operations, requests, and the statuses seen.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import threading
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from broker.api.app import create_app
from broker.api.refusals import REFUSALS
from broker.models import codec
from broker.models.site import SiteSpec
from broker.settings import ApiSettings, BrokerSettings
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.unit.broker.api.apitest_support import REPLICA, TOKENS, TableAuthenticator

EXAMPLES = int(os.environ.get("MERIDIAN_FUZZ_EXAMPLES", "20"))
MODES = {
    "anonymous": {},
    "forged": {"Authorization": "Bearer forged"},
    "admin": {"Authorization": "Bearer admin-token"},
    "member": {"X-Auth-Token": "member-token"},
}
SEEN: collections.Counter[tuple[str, int]] = collections.Counter()
OPERATIONS: set[str] = set()


def _seeded() -> MemoryStore:
    store = MemoryStore()

    async def seed() -> None:
        for site, region in (("edge-1", "eu"), ("core-1", "us")):
            await store.put(keys.site(site), codec.encode(SiteSpec(id=site, region=region)))
        await store.put(keys.LEADER, REPLICA.encode())

    # the app runs on schemathesis's own loop; seed on a loop of our own beforehand
    thread = threading.Thread(target=lambda: asyncio.run(seed()))
    thread.start()
    thread.join()
    return store


APP = create_app(
    _seeded(),
    BrokerSettings(name=REPLICA, api=ApiSettings(max_body_bytes=64 * 1024)),
    replica=REPLICA,
    auth=TableAuthenticator(TOKENS),
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


def check_refusal(case: Any, response: Any) -> None:
    status = response.status_code
    assert status < 500, f"{case.method} {case.path}: server error {status}: {response.text}"
    if status < 400:
        return
    assert status in REFUSALS, f"{case.method} {case.path}: undocumented status {status}"
    found = response.headers.get("content-type") or [""]
    ctype = found[0] if isinstance(found, list) else found
    assert ctype.startswith("application/problem+json"), (case.method, case.path, ctype)
    body = json.loads(response.content)
    assert body["status"] == status and body["type"].startswith("urn:meridian:problem:")
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]


@pytest.mark.parametrize("mode", sorted(MODES))
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_fuzz_the_served_openapi(case: Any, mode: str) -> None:
    headers = {**(case.headers or {}), **MODES[mode]}
    for name in ("authorization", "x-auth-token"):
        if name not in {k.lower() for k in MODES[mode]}:
            headers = {k: v for k, v in headers.items() if k.lower() != name}
    case.headers = headers
    response = case.call()
    OPERATIONS.add(case.operation.label)
    SEEN[(mode, response.status_code)] += 1
    check_refusal(case, response)
    if mode in ("anonymous", "forged") and case.operation.path not in ("/healthz", "/metrics"):
        assert response.status_code in (401, 413), (mode, case.path, response.status_code)


def test_fuzz_totals() -> None:
    """Runs after the fuzzing (file order): what it covered, for the record."""
    total = sum(SEEN.values())
    by_status: collections.Counter[int] = collections.Counter()
    for (_, status), n in SEEN.items():
        by_status[status] += n
    errors = sum(n for s, n in by_status.items() if s >= 500)
    print(
        f"\nfuzzed {len(OPERATIONS)} operations in {len(MODES)} auth modes, {total} requests, "
        f"statuses {dict(sorted(by_status.items()))}, 5xx: {errors}"
    )
    if total:  # 0 when this test runs alone
        assert not [s for s in by_status if s >= 500]
        assert len(OPERATIONS) >= 20
