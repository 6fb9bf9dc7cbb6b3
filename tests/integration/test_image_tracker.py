"""The broker as the swarm tracker, with real processes: etcd, a broker, six site agents,
every connection mTLS with the federation's certificates.

site-001 holds the image and serves directly; site-002..005 serve directly too (each its
own port, its uplink shaped so the copy takes seconds); site-006 is behind NAT and reaches
only the broker. An image registered through ``POST /v1/images`` for all five: the source's
agent reports the piece list, the leader records it in the catalog (``imagepieces/``,
fenced), and the four destinations that serve directly are ordered a **swarm** copy (the
piece list and a grant per peer) — they fetch pieces from the source and from each other;
site-006 gets the relay. ``meridian image show`` says so per destination. One destination's
agent is killed with SIGKILL mid-swarm and started again: it resumes from the pieces it had
verified (it fetches fewer than the whole list), and every copy ends byte-identical.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from broker.cli import image as image_cmd
from broker.devfed.federation import Federation
from replication import pieces
from tests.support.federation import image_body, running_federation
from tests.support.polling import wait_for

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

SITES = [f"site-{i:03d}" for i in range(1, 7)]
SERVING = SITES[:5]
NAT = "site-006"
KILLED = "site-003"
PIECE = 1 << 20
DATA = os.urandom(24 * PIECE + 4321)  # 25 pieces
CAP = 3 << 20  # bytes/s each serving site's uplink carries


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    state = Path(tmp_path_factory.mktemp("tracker"))
    caps: dict[str, dict[str, object]] = {
        s: {"upload_rate": CAP, "piece_size": PIECE} for s in SERVING
    }
    caps[NAT] = {"dial_peers": False}
    settings = {"image_audit_interval": 1.0, "serving": tuple(SERVING), "image_settings": caps}
    with running_federation(state, SITES, brokers=1, **settings) as fed:
        yield fed


def replicas(fed: Federation, image_id: str) -> dict[str, dict[str, Any]]:
    return {r["site"]: r for r in fed.api_get(f"/v1/images/{image_id}")["replicas"]}


def held_pieces(fed: Federation, site: str, image_id: str) -> int:
    bits = fed.images_dir(site) / f"{image_id}.have"
    count = -(-len(DATA) // PIECE)
    return len(pieces.from_bitmap(bits.read_bytes(), count)) if bits.exists() else 0


def pieces_from(fed: Federation, site: str, image_id: str) -> dict[str, int]:
    """Pieces the site's agent fetched from each peer in its last finished swarm."""
    log = (fed.state / "logs" / f"agent-{site}.log").read_text()
    found = re.findall(rf"image {image_id} swarmed in [\d.]+s: (\{{.*\}})", log)
    assert found, f"{site} never logged a finished swarm"
    got: dict[str, int] = json.loads(found[-1].replace("'", '"'))
    return got


def test_a_swarm_ordered_through_the_api_completes_resumes_and_nat_gets_the_relay(
    federation: Federation,
) -> None:
    fed = federation
    d = fed.images_dir("site-001")
    d.mkdir(parents=True, exist_ok=True)
    (d / "img-swarm.img").write_bytes(DATA)
    body = image_body("img-swarm", DATA, replicate_to=SITES[1:])
    resp = httpx.post(
        fed.api_url() + "/v1/images",
        json=body,
        headers={"Authorization": f"Bearer {fed.token}"},
        timeout=10.0,
        verify=fed.api_verify,
    )
    assert resp.status_code == 201, resp.text

    def midway() -> int | None:
        n = held_pieces(fed, KILLED, "img-swarm")
        return n if 3 <= n <= 18 else None

    before = wait_for(midway, timeout=90, what=f"{KILLED} midway through the swarm", every=0.1)
    fed.kill(f"agent-{KILLED}", signal.SIGKILL)
    kept = held_pieces(fed, KILLED, "img-swarm")
    assert kept >= before
    reps = replicas(fed, "img-swarm")
    assert all(reps[s]["swarm"] for s in SERVING[1:]), reps
    assert not reps[NAT]["swarm"]
    fed.start_agents([KILLED])

    def all_active() -> dict[str, dict[str, Any]] | None:
        reps = replicas(fed, "img-swarm")
        failed = {s: r["reason"] for s, r in reps.items() if r["state"] == "failed"}
        assert not failed, f"replicas failed: {failed}"
        done = all(reps.get(s, {}).get("state") == "active" for s in SITES)
        return reps if done else None

    reps = wait_for(all_active, timeout=180, what="every replica active", every=0.5)
    for site in SITES:
        assert (fed.images_dir(site) / "img-swarm.img").read_bytes() == DATA, site
        assert not (fed.images_dir(site) / "img-swarm.swarm").exists()
    paths = {s: reps[s]["path"] for s in SITES[1:]}
    assert paths == {**{s: "swarm" for s in SERVING[1:]}, NAT: "relay"}, paths
    total = -(-len(DATA) // PIECE)
    refetched = sum(pieces_from(fed, KILLED, "img-swarm").values())
    assert refetched <= total - kept, (refetched, total, kept)
    traded = {s: pieces_from(fed, s, "img-swarm") for s in SERVING[1:]}
    assert sum(n for got in traded.values() for p, n in got.items() if p != "site-001") > 0, (
        f"no destination served another: {traded}"
    )

    conn = ["--api-url", fed.api_url(), "--token", fed.token]
    runner = CliRunner(env={"MERIDIAN_CA_FILE": fed.ca_file})
    shown = runner.invoke(image_cmd.app, ["show", "img-swarm", *conn])
    assert shown.exit_code == 0, shown.output
    rows = {
        site: next(line for line in shown.stdout.splitlines() if site in line) for site in SITES[1:]
    }
    assert all("swarm" in rows[s] for s in SERVING[1:]), shown.stdout
    assert "relay" in rows[NAT], shown.stdout
