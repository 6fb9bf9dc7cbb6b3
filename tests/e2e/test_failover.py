"""End to end: the active member's site is lost and its standby is promoted (issue 10).

A real federation (etcd, 3 brokers, 6 sim agents): a vFirewall pair goes ACTIVE; the agent
of the site holding the active member is killed with ``kill -9`` (closed stream) — and for
a second pair paused with SIGSTOP (silent loss) — and the standby's own agent reports the
promoted role (the VNF leaves FAILING_OVER only then). Restoring redundancy at a third site
is not built yet, so the VNF ends DEGRADED and says so.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from broker.devfed.federation import Federation
from tests.e2e.test_vnf import active, call, create
from tests.support.polling import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def roles(vnf: dict[str, Any]) -> dict[str, str]:
    return {m["site"]: m["role"] for m in vnf["members"]}


def promoted(fed: Federation, vnf_id: str, lost: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        vnf: dict[str, Any] = fed.api_get(f"/v1/vnfs/{vnf_id}")
        return vnf if vnf["state"] == "DEGRADED" else None

    vnf = wait_for(probe, timeout=60, what=f"{vnf_id} failed over from {lost}")
    assert roles(vnf)[lost] == "standby", vnf["members"]
    assert sorted(roles(vnf).values()) == ["active", "standby"]
    assert "not built yet" in vnf["reason"]
    return vnf


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["kill-9", "sigstop"])
def test_losing_the_active_site_promotes_the_standby(
    federation: Federation, sig: signal.Signals
) -> None:
    room = dict.fromkeys(["cores", "pinned_cores", "ram_mb", "hugepages_mb", "sriov_vfs"], 10**6)
    resp = call(federation, "PUT", "/v1/quotas/acme-nfv", json={"limits": room})
    assert resp.status_code == 200, resp.text
    fw = create(federation, "vfirewall")
    vnf = active(federation, fw)
    site = next(s for s, r in roles(vnf).items() if r == "active")
    standby = next(s for s, r in roles(vnf).items() if r == "standby")
    agent = f"agent-{site}"
    started = time.monotonic()
    federation.kill(agent, sig)
    try:
        after = promoted(federation, fw, site)
        took = time.monotonic() - started
        assert roles(after)[standby] == "active"
        # generous: the silent path waits out site health's down_after (3 s here)
        assert took < 30, f"promotion took {took:.1f} s"
    finally:
        if sig == signal.SIGSTOP:
            federation.kill(agent, signal.SIGCONT)
