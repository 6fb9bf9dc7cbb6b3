"""End to end: a data-path profile set through the API lands on DPDK-capable hosts only.

A real federation (etcd, 3 brokers, 2 sim agents) and a real private ovs-vswitchd
(userspace datapath). site-001's agent manages the data path of its host
``site-001-cmp-002`` (sysfs: a laid-out tree; OVS: the private switch). Before the
profile, a VNF whose port asks ``data_path: ovs-dpdk`` has nowhere to go and explain
says why; after ``PUT /v1/sites/site-001/datapath`` the agent applies the profile, its
inventory at the broker carries ``CUSTOM_OVS_DPDK`` on that host, and the VNF lands
there — on no other host. A refused profile (a bridge Meridian does not own) is FAILED
in the observed status and an event, and the switch keeps what it had.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from broker.devfed.federation import Federation
from tests.support import hosttree
from tests.support import ovs as ovs_support
from tests.support import placement as P
from tests.support.federation import running_federation
from tests.support.polling import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.ovs]
SITES = ["site-001", "site-002"]
HOST = "site-001-cmp-002"
TAG = secrets.token_hex(2)
BRIDGE = f"mdp{TAG}"


@pytest.fixture(scope="module")
def switchd() -> Iterator[ovs_support.Ovs]:
    with ovs_support.running() as instance:
        yield instance


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, switchd: ovs_support.Ovs
) -> Iterator[Federation]:
    tree = hosttree.lay_out(tmp_path_factory.mktemp("host"))
    sections: dict[str, dict[str, object]] = {
        "hardware": {"sysfs_root": str(tree)},
        "datapath": {
            "enabled": True,
            "ovsdb": switchd.remote,
            "host": HOST,
            "drift_interval": 1.0,
        },
    }
    state = tmp_path_factory.mktemp("fed")
    with running_federation(state, SITES, agent_sections={"site-001": sections}) as fed:
        yield fed


def call(fed: Federation, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {fed.token}"}
    return httpx.request(
        method, fed.api_url() + path, headers=headers, timeout=10.0, verify=fed.api_verify, **kw
    )


def descriptor() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((P.SAMPLES / "vims.yaml").read_text())
    data["name"] = "dpdk-probe"
    data.pop("latency", None)
    vdu = data["vdus"][0]
    vdu["redundancy"] = {"model": "single"}
    vdu["anti_affinity"] = None
    vdu["connection_points"] = [{"name": "sip", "virtual_link": "sip", "data_path": "ovs-dpdk"}]
    return data


def observed(fed: Federation, generation: int) -> dict[str, Any] | None:
    shown: dict[str, Any] = fed.api_get("/v1/sites/site-001/datapath")
    got = shown.get("observed") or {}
    return got if got.get("observed_generation") == generation else None


def test_profile_through_the_api_makes_dpdk_hosts(
    federation: Federation, switchd: ovs_support.Ovs
) -> None:
    assert call(federation, "PUT", "/v1/quotas/acme-nfv", json={"limits": {"cores": 64}}).is_success
    dry = call(federation, "POST", "/v1/vnfs?dry_run=true", json=descriptor())
    assert dry.status_code == 200 and not dry.json()["feasible"], dry.text
    assert "data-path" in dry.text and "CUSTOM_OVS_DPDK" in dry.text

    profile = {
        "ovs": {
            "other_config": {"pmd-cpu-mask": "0x6"},
            "bridges": [
                {"name": BRIDGE, "datapath_type": "netdev", "ports": [{"name": f"mi{TAG}"}]}
            ],
        }
    }
    resp = call(federation, "PUT", "/v1/sites/site-001/datapath", json=profile)
    assert resp.status_code == 202 and resp.json()["generation"] == 1, resp.text
    status = wait_for(lambda: observed(federation, 1), timeout=60, what="profile observed")
    assert status["state"] == "READY", status
    assert switchd.vsctl("get", "Bridge", BRIDGE, "datapath_type") == "netdev"

    def placed() -> dict[str, Any] | None:
        answer = call(federation, "POST", "/v1/vnfs?dry_run=true", json=descriptor()).json()
        return answer if answer["feasible"] else None

    plan = wait_for(placed, timeout=30, what="the DPDK host in the broker's inventory")["plan"]
    assert [(a["site"], a["host"]) for a in plan["assignments"]] == [("site-001", HOST)]

    created = call(federation, "POST", "/v1/vnfs", json=descriptor())
    assert created.status_code == 202, created.text
    vnf_id = created.json()["id"]

    def active() -> dict[str, Any] | None:
        vnf: dict[str, Any] = federation.api_get(f"/v1/vnfs/{vnf_id}")
        assert vnf["state"] != "FAILED", vnf
        return vnf if vnf["state"] == "ACTIVE" else None

    vnf = wait_for(active, timeout=60, what=f"{vnf_id} ACTIVE")
    assert [(m["site"], m["observed_host"]) for m in vnf["members"]] == [("site-001", HOST)]

    # a hand change is corrected and reported as an event
    switchd.vsctl("set", "Open_vSwitch", ".", "other_config:pmd-cpu-mask=0x3")

    def drift_event() -> list[dict[str, Any]] | None:
        found = [
            e
            for e in federation.api_get("/v1/events")["events"]
            if e["kind"] == "site.datapath.drift"
        ]
        return found or None

    [event, *_] = wait_for(drift_event, timeout=30, what="a drift event")
    assert "pmd-cpu-mask" in event["message"] and event["subject"] == "site-001"
    assert switchd.vsctl("get", "Open_vSwitch", ".", "other_config:pmd-cpu-mask") == '"0x6"'


def test_refused_profile_is_failed_and_an_event(
    federation: Federation, switchd: ovs_support.Ovs
) -> None:
    foreign = f"fx{TAG}"
    switchd.vsctl(
        "--may-exist", "add-br", foreign, "--", "set", "bridge", foreign, "datapath_type=netdev"
    )
    shown = federation.api_get("/v1/sites/site-001/datapath")
    generation = int(shown["generation"]) + 1
    clash = {"ovs": {"bridges": [{"name": foreign}]}}
    assert call(federation, "PUT", "/v1/sites/site-001/datapath", json=clash).is_success
    status = wait_for(lambda: observed(federation, generation), timeout=60, what="refusal")
    assert status["state"] == "FAILED" and not status["temporary"]
    assert f"bridge '{foreign}' exists and is not Meridian's" in status["message"]
    events = federation.api_get("/v1/events")["events"]
    assert any(e["kind"] == "site.datapath.failed" for e in events)
    assert switchd.vsctl("get", "Bridge", foreign, "external_ids") == "{}"
    assert BRIDGE in switchd.vsctl("list-br").split()  # the previous state is kept
