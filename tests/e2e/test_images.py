"""End to end: an image registered through the API reaches its sites, verified, and
drift is repaired.

A real federation (etcd, 3 brokers, 4 sim agents, each with a directory standing in for
its Glance): an image placed at site-001 and registered through ``POST /v1/images`` is
copied over mTLS through the broker relays to the sites named and the sites a selector
matches, and every copy is byte-identical. A copy corrupted on disk and a copy deleted
are found by the agents' audits, re-queued (``repairs``, an ``image.drift`` event) and
copied again. ``meridian image replicate --watch`` follows copies to the end. A
destination killed with SIGKILL mid-copy resumes from its verified prefix; killing the
leader mid-replication loses nothing. A source whose bytes do not match the registered
checksum fails with that reason; bad requests are problem+json naming the field.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from broker.cli import image as image_cmd
from broker.devfed.federation import Federation
from tests.support.federation import image_body as body
from tests.support.federation import running_federation
from tests.support.polling import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SITES = [f"site-{i:03d}" for i in range(1, 5)]  # regions 1, 2, 3, 1
DATA = os.urandom(3 * (1 << 20) + 12345)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    state = Path(tmp_path_factory.mktemp("images"))
    with running_federation(state, SITES, image_audit_interval=1.0) as fed:
        yield fed


def call(fed: Federation, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {fed.token}"}
    return httpx.request(
        method, fed.api_url() + path, headers=headers, timeout=10.0, verify=fed.api_verify, **kw
    )


def place(fed: Federation, site: str, image_id: str, data: bytes) -> None:
    """Put the bytes at the site, as its Glance would hold them: whole, at once (Glance
    shows an image only once its upload ended; a file still being written is reported
    busy by the audit, which the unit tests show)."""
    d = fed.images_dir(site)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{image_id}.new").write_bytes(data)
    (d / f"{image_id}.new").rename(d / f"{image_id}.img")


def replicas(fed: Federation, image_id: str) -> dict[str, dict[str, Any]]:
    shown = fed.api_get(f"/v1/images/{image_id}")
    return {r["site"]: r for r in shown["replicas"]}


def all_active(fed: Federation, image_id: str, sites: list[str]) -> dict[str, dict[str, Any]]:
    def probe() -> dict[str, dict[str, Any]] | None:
        reps = replicas(fed, image_id)
        failed = {s: r["reason"] for s, r in reps.items() if r["state"] == "failed"}
        assert not failed, f"replicas failed: {failed}"
        ok = all(reps.get(s, {}).get("state") == "active" for s in sites)
        return reps if ok else None

    return wait_for(probe, timeout=45, what=f"{image_id} active at {', '.join(sites)}", every=0.3)


def held(fed: Federation, site: str, image_id: str) -> bytes:
    return (fed.images_dir(site) / f"{image_id}.img").read_bytes()


def test_register_replicate_verify_and_repair_drift(federation: Federation) -> None:
    place(federation, "site-001", "img-e2e", DATA)
    resp = call(
        federation, "POST", "/v1/images", json=body("img-e2e", DATA, replicate_to=["site-002"])
    )
    assert resp.status_code == 201, resp.text
    all_active(federation, "img-e2e", ["site-001", "site-002"])
    resp = call(
        federation,
        "POST",
        "/v1/images/img-e2e/replicate",
        json={"to": ["site-004"], "selector": "region=region-3"},
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["requested"] == ["site-003", "site-004"]
    reps = all_active(federation, "img-e2e", SITES)
    for site in SITES:
        assert held(federation, site, "img-e2e") == DATA, f"{site} holds other bytes"
        assert reps[site]["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert {reps[s]["source"] for s in SITES[1:]} <= set(SITES)

    # drift: one copy corrupted on disk, one deleted; both audited, re-copied, verified
    path = federation.images_dir("site-002") / "img-e2e.img"
    bad = bytearray(path.read_bytes())
    bad[1000] ^= 0xFF
    path.write_bytes(bytes(bad))
    (federation.images_dir("site-003") / "img-e2e.img").unlink()

    def repaired() -> dict[str, dict[str, Any]] | None:
        reps = replicas(federation, "img-e2e")
        done = all(
            reps[s]["state"] == "active" and reps[s]["repairs"] >= 1
            for s in ("site-002", "site-003")
        )
        return reps if done else None

    reps = wait_for(repaired, timeout=45, what="drifted replicas repaired", every=0.3)
    assert held(federation, "site-002", "img-e2e") == DATA
    assert held(federation, "site-003", "img-e2e") == DATA
    assert reps["site-001"]["repairs"] == 0 and reps["site-004"]["repairs"] == 0
    drift = [
        e
        for e in federation.api_get("/v1/events?limit=500")["events"]
        if e["kind"] == "image.drift"
    ]
    assert {e["subject"] for e in drift} >= {"site-002", "site-003"}


def test_source_bytes_not_matching_the_checksum_fail_with_the_reason(
    federation: Federation,
) -> None:
    place(federation, "site-001", "img-liar", b"not the registered bytes")
    resp = call(
        federation, "POST", "/v1/images", json=body("img-liar", DATA, replicate_to=["site-002"])
    )
    assert resp.status_code == 201, resp.text

    def failed() -> dict[str, Any] | None:
        rep = replicas(federation, "img-liar").get("site-001", {})
        return rep if rep.get("state") == "failed" else None

    rep = wait_for(failed, timeout=30, what="the lying source failed", every=0.3)
    assert "do not match the registered checksum" in rep["reason"]
    assert replicas(federation, "img-liar")["site-002"]["state"] == "queued"
    assert not (federation.images_dir("site-002") / "img-liar.img").exists()


def test_bad_requests_name_the_field(federation: Federation) -> None:
    resp = call(federation, "POST", "/v1/images", json=body("img-x", DATA, source_site="nowhere"))
    assert resp.status_code == 422 and resp.json()["field"] == "source_site"
    resp = call(federation, "POST", "/v1/images", json=body("img-x", DATA, sha256="abc"))
    assert resp.status_code == 422 and resp.json()["field"] == "sha256"
    resp = call(federation, "POST", "/v1/images/img-e2e/replicate", json={"to": ["nowhere"]})
    assert resp.status_code == 422 and resp.json()["field"] == "to[0]"
    resp = call(federation, "GET", "/v1/images/img-missing")
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("application/problem+json")


def test_cli_replicates_with_watch_and_shows(federation: Federation) -> None:
    data = os.urandom(512 * 1024 + 7)
    place(federation, "site-001", "img-cli", data)
    resp = call(federation, "POST", "/v1/images", json=body("img-cli", data))
    assert resp.status_code == 201, resp.text
    all_active(federation, "img-cli", ["site-001"])
    conn = ["--api-url", federation.api_url(), "--token", federation.token]
    runner = CliRunner(env={"MERIDIAN_CA_FILE": federation.ca_file})  # verifies the API's cert
    result = runner.invoke(
        image_cmd.app, ["replicate", "img-cli", "--to", "site-003,site-004", "--watch", *conn]
    )
    assert result.exit_code == 0, result.output
    for site in ("site-003", "site-004"):
        assert held(federation, site, "img-cli") == data
    shown = runner.invoke(image_cmd.app, ["show", "img-cli", "-o", "json", *conn])
    assert shown.exit_code == 0, shown.output
    states = {r["site"]: r["state"] for r in json.loads(shown.stdout)["replicas"]}
    assert states == {"site-001": "active", "site-003": "active", "site-004": "active"}
    listed = runner.invoke(image_cmd.app, ["list", *conn])
    assert listed.exit_code == 0 and "img-cli" in listed.stdout
    bad = runner.invoke(image_cmd.app, ["replicate", "img-cli", "--to", "nowhere", *conn])
    assert bad.exit_code == 1 and "to[0]" in bad.output


def test_a_destination_killed_mid_copy_resumes_from_its_verified_prefix(
    federation: Federation,
) -> None:
    big = os.urandom(48 << 20)
    place(federation, "site-001", "img-big", big)
    resp = call(federation, "POST", "/v1/images", json=body("img-big", big))
    assert resp.status_code == 201, resp.text
    all_active(federation, "img-big", ["site-001"])
    resp = call(federation, "POST", "/v1/images/img-big/replicate", json={"to": ["site-004"]})
    assert resp.status_code == 202, resp.text
    part = federation.images_dir("site-004") / "img-big.part"

    def copying() -> int | None:
        return part.stat().st_size if part.exists() and part.stat().st_size > 0 else None

    wait_for(copying, timeout=30, what="site-004 receiving img-big", every=0.02)
    federation.kill("agent-site-004")
    kept = part.stat().st_size
    assert 0 < kept < len(big), "killed mid-copy, with a verified prefix on disk"
    federation.start_agents(["site-004"])
    reps = all_active(federation, "img-big", ["site-004"])
    assert held(federation, "site-004", "img-big") == big
    assert reps["site-004"]["attempts"] >= 2
    log = (federation.state / "logs" / "agent-site-004.log").read_text()
    resumed = [
        int(line.rsplit(" ", 1)[1]) for line in log.splitlines() if "img-big: copying" in line
    ]
    assert resumed and resumed[-1] >= kept, f"the restarted agent resumed at {resumed}"


def test_replication_carries_on_when_the_leader_is_killed(federation: Federation) -> None:
    """Last in the module: it leaves the federation one broker short."""
    data = os.urandom(8 << 20)
    place(federation, "site-001", "img-lead", data)
    leader = str(federation.api_get("/v1/leader")["leader"])
    other = next(n for n in federation.broker_names() if n != leader)
    resp = httpx.post(
        federation.api_url(other) + "/v1/images",
        json=body("img-lead", data, replicate_to=["site-002", "site-003", "site-004"]),
        headers={"Authorization": f"Bearer {federation.token}"},
        timeout=10.0,
        verify=federation.api_verify,
    )
    assert resp.status_code == 201, resp.text
    federation.kill(leader)  # the controller and (some sites') relay die with it
    reps = all_active(federation, "img-lead", SITES)
    for site in SITES:
        assert held(federation, site, "img-lead") == data
    assert all(r["sha256"] == hashlib.sha256(data).hexdigest() for r in reps.values())
    assert federation.api_get("/v1/leader")["leader"] != leader
