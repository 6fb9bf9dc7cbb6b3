"""Image replication between two real Glances: minicloud site 1 → site 2, verified, repaired.

A federation of etcd, one broker process and two openstack-driver agent processes, one per
minicloud site, each serving and receiving images in its own site's Glance
(``siteagent.glancestore``; the agent's images dir only stages bytes). An operator puts an
image into site 1's Glance marked ``meridian_image_id`` and registers it through
``POST /v1/images`` with the sha256 and Glance's os_hash_value; the broker orders a copy to
site 2, whose agent pulls it through the broker relay over mTLS, stages and verifies it,
and uploads it to site 2's Glance. Checked from outside Meridian with openstacksdk: site 2's
Glance holds the image active with the same os_hash_value, and its bytes have the sha256.
Then drift: the replica's bytes corrupted in site 2's Glance file store, and later the
replica deleted from Glance, are each found by site 2's audit and copied again.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siteagent.drivers.openstack_support import connect
from siteagent.glancestore import MARK
from tests.support.minicloud import CLOUD, Minicloud
from tests.support import osfed
from tests.support.osfed import OpenStackFederation
from tests.support.polling import wait_for

pytestmark = [pytest.mark.openstack, pytest.mark.etcd, pytest.mark.slow]

CLOUD2 = "minicloud-site2"
SITE1 = "os-img-1"
SITE2 = "os-img-2"
DATA = os.urandom(3 * (1 << 20) + 4321)
SETTLE = 300.0
"""Seconds for a copy or a repair: seconds when idle, minutes on a loaded 2-core machine."""


@pytest.fixture(scope="module")
def fed(minicloud: Minicloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    state = Path(tmp_path_factory.mktemp("os-img"))
    clouds = {SITE1: CLOUD, SITE2: CLOUD2}
    with osfed.running(state, [SITE1, SITE2], clouds=clouds, image_audit_interval=2.0) as fed:
        yield fed


def marked(conn: Any, image_id: str) -> list[Any]:
    return [i for i in conn.image.images() if (i.properties or {}).get(MARK) == image_id]


@pytest.fixture
def glances(minicloud: Minicloud) -> Iterator[tuple[Any, Any, str]]:
    """(site 1's Glance, site 2's Glance, a fresh catalog image id); the marked images of
    that id are deleted from both afterwards."""
    image_id = f"img-os-{uuid.uuid4().hex[:8]}"
    one, two = connect(cloud=CLOUD), connect(cloud=CLOUD2)
    try:
        yield one, two, image_id
    finally:
        for conn in (one, two):
            for found in marked(conn, image_id):
                conn.image.delete_image(found, ignore_missing=True)
            conn.close()


def operator_upload(conn: Any, image_id: str, data: bytes) -> Any:
    """What an operator does at site 1: an image in Glance, marked for Meridian."""
    body = {
        "name": "cirros-os",
        "disk_format": "raw",
        "container_format": "bare",
        "visibility": "shared",
        MARK: image_id,
    }
    created = conn.image.post("/images", json=body)
    assert created.status_code == 201, created.text
    glance_id = created.json()["id"]
    put = conn.image.put(
        f"/images/{glance_id}/file",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert put.status_code == 204, put.text
    return conn.image.get_image(glance_id)


def glance_bytes(conn: Any, image: Any) -> bytes:
    response = conn.image.download_image(image, stream=True)
    try:
        return b"".join(response.iter_content(1 << 20))
    finally:
        response.close()


def replicas(fed: OpenStackFederation, image_id: str) -> dict[str, dict[str, Any]]:
    shown = fed.api_get(f"/v1/images/{image_id}")
    return {r["site"]: r for r in shown["replicas"]}


def replica_at_site2(fed: OpenStackFederation, two: Any, image_id: str, repairs: int) -> Any:
    """Waits for the site-2 replica to be active with ``repairs`` repairs, as the broker
    and site 2's Glance both see it; returns the Glance image."""

    def probe() -> Any:
        rep = replicas(fed, image_id).get(SITE2, {})  # a failed try is retried: wait on
        if rep.get("state") != "active" or rep.get("repairs", 0) < repairs:
            return None
        held = [i for i in marked(two, image_id) if i.status == "active"]
        return held[0] if len(held) == 1 else None

    return wait_for(probe, timeout=SETTLE, what=f"{image_id} active at {SITE2}", every=1.0)


def test_glance_image_replicates_to_the_other_site_and_drift_is_repaired(
    fed: OpenStackFederation, minicloud: Minicloud, glances: tuple[Any, Any, str]
) -> None:
    one, two, image_id = glances
    source = operator_upload(one, image_id, DATA)
    assert source.status == "active" and source.hash_algo == "sha512"
    assert source.hash_value == hashlib.sha512(DATA).hexdigest()
    sha256 = hashlib.sha256(DATA).hexdigest()

    body = {
        "id": image_id,
        "name": "cirros-os",
        "size": len(DATA),
        "sha256": sha256,
        "os_hash_algo": source.hash_algo,
        "os_hash_value": source.hash_value,
        "source_site": SITE1,
        "replicate_to": [SITE2],
    }
    resp = fed.call("POST", "/v1/images", json=body)
    assert resp.status_code == 201, resp.text

    replica = replica_at_site2(fed, two, image_id, repairs=0)
    assert replica.hash_algo == "sha512" and replica.hash_value == source.hash_value
    assert replica.size == len(DATA)
    assert (replica.properties or {}).get("meridian_sha256") == sha256
    assert hashlib.sha256(glance_bytes(two, replica)).hexdigest() == sha256
    reps = replicas(fed, image_id)
    assert reps[SITE1]["state"] == "active" and reps[SITE1]["sha256"] == sha256
    assert reps[SITE2]["sha256"] == sha256 and reps[SITE2]["source"] == SITE1

    # drift 1: the replica's bytes corrupted where site 2's Glance keeps them
    stored = [p for p in minicloud.state_dir.rglob(replica.id) if p.is_file()]
    assert len(stored) == 1, f"site 2's Glance file for {replica.id}: {stored}"
    bad = bytearray(stored[0].read_bytes())
    bad[1000] ^= 0xFF
    stored[0].write_bytes(bytes(bad))
    repaired = replica_at_site2(fed, two, image_id, repairs=1)
    assert repaired.id != replica.id  # the corrupt Glance image was replaced
    assert repaired.hash_value == source.hash_value
    assert hashlib.sha256(glance_bytes(two, repaired)).hexdigest() == sha256

    # drift 2: the replica deleted from site 2's Glance
    two.image.delete_image(repaired)
    again = replica_at_site2(fed, two, image_id, repairs=2)
    assert again.hash_value == source.hash_value
    assert hashlib.sha256(glance_bytes(two, again)).hexdigest() == sha256
    assert replicas(fed, image_id)[SITE1]["repairs"] == 0
    drift = [e for e in fed.api_get("/v1/events?limit=500")["events"] if e["kind"] == "image.drift"]
    assert SITE2 in {e["subject"] for e in drift}
