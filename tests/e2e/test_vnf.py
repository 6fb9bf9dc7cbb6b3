"""End to end: geo-redundant VNFs placed by the leader, converged by sim agents, ACTIVE.

A real federation (etcd, 3 brokers, 6 sim agents in 3 regions): the vIMS sample goes
active-active across the three regions within its latency bounds, the vFirewall pair on
two sites with SR-IOV; the agents report each server READY on the host and NUMA cell
that hold it; deleting a VNF removes its servers and releases its claims. The tenant's
global quota is set through the API: the ACTIVE VNFs show in its usage, one more VNF over
the limit is refused naming the class, and a deleted VNF's usage goes back.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import yaml

from broker.devfed.federation import Federation
from tests.support import placement as P
from tests.support.polling import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def call(fed: Federation, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {fed.token}"}
    return httpx.request(
        method, fed.api_url() + path, headers=headers, timeout=10.0, verify=fed.api_verify, **kw
    )


def state_of(fed: Federation, vnf_id: str) -> str:
    return str(fed.api_get(f"/v1/vnfs/{vnf_id}")["state"])


def create(fed: Federation, sample: str) -> str:
    body = yaml.safe_load((P.SAMPLES / f"{sample}.yaml").read_text())
    resp = call(fed, "POST", "/v1/vnfs", json=body)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def active(fed: Federation, vnf_id: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        vnf: dict[str, Any] = fed.api_get(f"/v1/vnfs/{vnf_id}")
        assert vnf["state"] != "FAILED", vnf["reason"]
        return vnf if vnf["state"] == "ACTIVE" else None

    return wait_for(probe, timeout=60, what=f"{vnf_id} ACTIVE")


def cores_used(fed: Federation, tenant: str = "acme-nfv") -> int:
    usage = fed.api_get(f"/v1/quotas/{tenant}/usage")
    return sum(int(line["used"]) for line in usage["global"] if line["resource"] == "cores")


def test_geo_redundant_vnfs_place_converge_and_delete(federation: Federation) -> None:
    matrix = yaml.safe_load((P.SAMPLES / "latency.yaml").read_text())
    assert call(federation, "PUT", "/v1/latency", json=matrix).status_code == 200
    # vIMS (12 cores) and the vFirewall (8) fit in 24; a second vIMS does not
    limits = {"limits": {"cores": 24}}
    resp = call(federation, "PUT", "/v1/quotas/acme-nfv", json=limits)
    assert resp.status_code == 200, resp.text
    dry = call(
        federation,
        "POST",
        "/v1/vnfs?dry_run=true",
        json=yaml.safe_load((P.SAMPLES / "vims.yaml").read_text()),
    )
    assert dry.status_code == 200 and dry.json()["feasible"], dry.text
    ims = create(federation, "vims")
    fw = create(federation, "vfirewall")
    vims = active(federation, ims)
    regions = {
        federation.api_get(f"/v1/sites/{m['site']}")["spec"]["region"] for m in vims["members"]
    }
    assert len(regions) == 3, vims["members"]
    assert "site-006" not in {m["site"] for m in vims["members"]}  # 48 ms from paris
    assert all(m["state"] == "READY" and m["observed_host"] for m in vims["members"])
    firewall = active(federation, fw)
    assert len({m["site"] for m in firewall["members"]}) == 2
    assert cores_used(federation) == 20
    body = yaml.safe_load((P.SAMPLES / "vims.yaml").read_text())
    over = call(federation, "POST", "/v1/vnfs", json=body)
    assert over.status_code == 409, over.text
    assert "cores" in over.json()["detail"] and "requested 12, 4 left" in over.json()["detail"]
    explain = federation.api_get(f"/v1/vnfs/{ims}/explain")
    filtered = {f["site"]: f["reason"] for f in explain["explain"]["vdus"]["cscf"]["filtered"]}
    assert "latency to metro-paris is 48 ms" in filtered["site-006"]
    # delete: servers go, claims go, the record goes
    assert call(federation, "DELETE", f"/v1/vnfs/{ims}").status_code == 202

    def gone() -> bool | None:
        return True if call(federation, "GET", f"/v1/vnfs/{ims}").status_code == 404 else None

    wait_for(gone, timeout=60, what=f"{ims} deleted")
    assert cores_used(federation) == 8  # the vIMS's usage went back with it
    assert state_of(federation, fw) == "ACTIVE"
    time.sleep(0.1)
