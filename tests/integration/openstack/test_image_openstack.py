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

Swarming into Glance (a second federation, every site serving directly, the broker the
tracker): an image in site 1's Glance is swarmed by site 2 (Glance) and a sim site, in
pieces from the source and from each other; site 2's copy is verified whole (sha256 and
sha512 against the catalog) before it goes into Glance, and there it is active with
Glance's ``os_hash_value`` equal to the catalog's. An image registered with an
``os_hash_value`` its bytes do not have is never activated nor left in site 2's Glance.
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


def replica_at_site2(
    fed: OpenStackFederation, two: Any, image_id: str, repairs: int, site: str = SITE2
) -> Any:
    """Waits for the replica at ``site`` (on site 2's cloud) to be active with ``repairs``
    repairs, as the broker and site 2's Glance both see it; returns the Glance image."""

    def probe() -> Any:
        rep = replicas(fed, image_id).get(site, {})  # a failed try is retried: wait on
        if rep.get("state") != "active" or rep.get("repairs", 0) < repairs:
            return None
        held = [i for i in marked(two, image_id) if i.status == "active"]
        return held[0] if len(held) == 1 else None

    return wait_for(probe, timeout=SETTLE, what=f"{image_id} active at {site}", every=1.0)


def register_body(image_id: str, source: Any, at: str, to: list[str]) -> dict[str, Any]:
    """``POST /v1/images`` for DATA, held in Glance at ``at`` as ``source``."""
    return {
        "id": image_id,
        "name": "cirros-os",
        "size": len(DATA),
        "sha256": hashlib.sha256(DATA).hexdigest(),
        "os_hash_algo": source.hash_algo,
        "os_hash_value": source.hash_value,
        "source_site": at,
        "replicate_to": to,
    }


def test_glance_image_replicates_to_the_other_site_and_drift_is_repaired(
    fed: OpenStackFederation, minicloud: Minicloud, glances: tuple[Any, Any, str]
) -> None:
    one, two, image_id = glances
    source = operator_upload(one, image_id, DATA)
    assert source.status == "active" and source.hash_algo == "sha512"
    assert source.hash_value == hashlib.sha512(DATA).hexdigest()
    sha256 = hashlib.sha256(DATA).hexdigest()

    body = register_body(image_id, source, SITE1, [SITE2])
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


SW1, SW2, SW3 = "os-sw-1", "os-sw-2", "os-sw-3"  # Glance, Glance, sim


@pytest.fixture(scope="module")
def swarm_fed(minicloud: Minicloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    state = Path(tmp_path_factory.mktemp("os-swarm"))
    sites = [SW1, SW2, SW3]
    with osfed.running(
        state,
        sites,
        clouds={SW1: CLOUD, SW2: CLOUD2},
        image_audit_interval=2.0,
        serving=tuple(sites),
        image_settings={s: {"piece_size": 1 << 20} for s in sites},
    ) as fed:
        yield fed


def test_an_image_swarmed_into_glance_is_verified_whole_and_by_glance_before_it_is_active(
    swarm_fed: OpenStackFederation, glances: tuple[Any, Any, str]
) -> None:
    fed = swarm_fed
    one, two, image_id = glances
    source = operator_upload(one, image_id, DATA)
    resp = fed.call("POST", "/v1/images", json=register_body(image_id, source, SW1, [SW2, SW3]))
    assert resp.status_code == 201, resp.text
    copy = replica_at_site2(fed, two, image_id, repairs=0, site=SW2)
    assert copy.hash_algo == "sha512" and copy.hash_value == source.hash_value
    sha256 = hashlib.sha256(DATA).hexdigest()
    assert (copy.properties or {}).get("meridian_sha256") == sha256
    assert hashlib.sha256(glance_bytes(two, copy)).hexdigest() == sha256

    def both() -> dict[str, dict[str, Any]] | None:
        reps = replicas(fed, image_id)
        return reps if all(reps.get(s, {}).get("state") == "active" for s in (SW2, SW3)) else None

    reps = wait_for(both, timeout=SETTLE, what=f"{image_id} active at {SW2} and {SW3}", every=1.0)
    assert {s: (reps[s]["swarm"], reps[s]["path"]) for s in (SW2, SW3)} == {
        SW2: (True, "swarm"),
        SW3: (True, "swarm"),
    }
    assert (fed.images_dir(SW3) / f"{image_id}.img").read_bytes() == DATA
    assert not list(fed.images_dir(SW2).glob(f"{image_id}.*")), "staging left behind"


def test_a_swarmed_image_whose_os_hash_value_is_not_the_catalogs_never_reaches_glance(
    swarm_fed: OpenStackFederation, glances: tuple[Any, Any, str]
) -> None:
    fed = swarm_fed
    one, two, image_id = glances
    source = operator_upload(one, image_id, DATA)
    body = {**register_body(image_id, source, SW1, [SW2]), "os_hash_value": "ab" * 64}
    resp = fed.call("POST", "/v1/images", json=body)
    assert resp.status_code == 201, resp.text

    def failed() -> dict[str, Any] | None:
        rep = replicas(fed, image_id).get(SW2, {})
        return rep if rep.get("state") == "failed" else None

    rep = wait_for(failed, timeout=SETTLE, what=f"{image_id} refused at {SW2}", every=1.0)
    assert "sha512" in rep["reason"], rep
    assert marked(two, image_id) == [], "a mismatching image was left in site 2's Glance"
