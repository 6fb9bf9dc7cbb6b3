"""A live DR drill on real OpenStack (issue 11): minicloud site 1 cut for a vfirewall pair.

A federation of etcd, one broker and two agents driving minicloud site 1 and site 2 with
the openstack driver; an active-standby pair (the ``ctl`` VDU of the openstack tier's
descriptor: one member per site) serves with its active member at site 1. A live drill of
site 1 is posted through the REST API (``failback: true``, held cut for a while). Checked
from outside Meridian with openstacksdk and from the event log:

- while cut, the standby's server at site 2 is promoted: ``meridian:role`` is ``active``
  in its Nova metadata (and site 1's, demoted first, says ``standby``) — the failover
  controller did it, the drill only cut;
- the drill reaches COMPLETED after failback: the active member is back at site 1, in the
  record and in both Novas' metadata;
- the report (``GET /v1/drills/{id}/report``) has a measured RTO equal to the cut →
  ``vnf.failover_completed`` in the event log, and says the original roles were restored;
- a drill deletes nothing: both servers exist at the end, the very ones of before (a cut
  member still runs, so the failover controller does not re-place it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.openstack import test_vnf_openstack as vnf_os
from tests.support import osfed
from tests.support.minicloud import Minicloud
from tests.support.osfed import OpenStackFederation
from tests.support.polling import wait_for

pytestmark = [pytest.mark.openstack, pytest.mark.etcd, pytest.mark.slow]

SITE1, SITE2 = "os-dr-1", "os-dr-2"
ENDED = ("COMPLETED", "ABORTED", "FAILED")
HOLD_S = 20.0
"""How long the drill stays cut once its VNF settled: time to look at site 2's Nova."""
tenant_at_both = vnf_os.tenant_at_both
image_at_both = vnf_os.image_at_both


@pytest.fixture(scope="module")
def fed(minicloud: Minicloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with osfed.geo(Path(tmp_path_factory.mktemp("os-dr")), SITE1, SITE2) as fed:
        yield fed


def roles_in_nova(fed: OpenStackFederation, vnf_id: str, names: dict[str, str]) -> dict[str, Any]:
    """site → (server id, status, meridian:role) of the member ``names[site]``."""
    out = {}
    for site, name in names.items():
        server = osfed.nova_server(fed, site, vnf_id, name)
        assert server is not None, f"{name}'s server is gone from {site}'s Nova"
        out[site] = (server.id, server.status, server.metadata.get("meridian:role"))
    return out


def test_live_drill_of_site1_promotes_at_site2_reports_and_fails_back(
    fed: OpenStackFederation, tenant_at_both: str, image_at_both: tuple[int, str]
) -> None:
    pair = vnf_os.descriptor(tenant_at_both, *image_at_both)
    pair["name"], pair["vdus"] = "vdrill", pair["vdus"][:1]
    vnf_id = str(osfed.create_active(fed, pair)["id"])
    before = osfed.active_at(fed, vnf_id, SITE1)
    names = {m["site"]: m["name"] for m in before["members"]}
    assert sorted(names) == [SITE1, SITE2], before["members"]
    servers = roles_in_nova(fed, vnf_id, names)
    assert {s: r for s, (_, _, r) in servers.items()} == {SITE1: "active", SITE2: "standby"}

    body = {
        "mode": "live",
        "scope": {"sites": [SITE1]},
        "failback": True,
        "hold_s": HOLD_S,
        "max_duration_s": 600,
    }
    resp = fed.call("POST", "/v1/drills", json=body)
    assert resp.status_code == 201, resp.text
    drill_id = resp.json()["id"]
    assert resp.json()["state"] == "PLANNED" and resp.json()["sites"] == [SITE1]

    def promoted_in_nova() -> dict[str, Any] | None:
        now = roles_in_nova(fed, vnf_id, names)
        return now if now[SITE2][2] == "active" else None

    during = wait_for(promoted_in_nova, timeout=180, what=f"{vnf_id} active at {SITE2}", every=1)
    assert during[SITE1][2] == "standby", "the cut active was demoted: never two active"
    running = fed.api_get(f"/v1/drills/{drill_id}")
    assert running["state"] in ("RUNNING", "FAILING_BACK"), running

    def ended() -> dict[str, Any] | None:
        doc: dict[str, Any] = fed.api_get(f"/v1/drills/{drill_id}")
        return doc if doc["state"] in ENDED else None

    doc = wait_for(ended, timeout=300, what=f"drill {drill_id} ended", every=1)
    assert doc["state"] == "COMPLETED", (doc["reason"], doc.get("failed_back"))

    after = osfed.vnf_in(fed, vnf_id, ("ACTIVE",))
    assert after is not None, fed.api_get(f"/v1/vnfs/{vnf_id}")
    assert {m["site"]: m["role"] for m in after["members"]} == {
        SITE1: "active",
        SITE2: "standby",
    }, after["members"]
    end = wait_for(
        lambda: (n := roles_in_nova(fed, vnf_id, names))[SITE1][2] == "active" and n,
        timeout=60,
        what="site 1's server active again in Nova",
    )
    assert end == {s: (sid, "ACTIVE", r) for s, (sid, _, r) in servers.items()}, (
        "the same two servers, ACTIVE, in their original roles: the drill deleted nothing"
    )

    rep = fed.api_get(f"/v1/drills/{drill_id}/report")
    assert rep["state"] == "COMPLETED" and rep["sites"] == [SITE1]
    (row,) = rep["vnfs"]
    assert row["vnf"] == vnf_id and row["cut"] == [f"{names[SITE1]}@{SITE1}"], row
    assert row["failback"] == "original roles restored" and not row["failed"], row
    done = [
        e["at_ms"]
        for e in osfed.events(fed, vnf_id, "vnf.failover_completed")
        if e["at_ms"] >= rep["started_ms"]
    ]
    assert done, "no vnf.failover_completed after the cut in the event log"
    assert row["rto_s"] == round((min(done) - rep["started_ms"]) / 1000, 3), (row, done)
    assert 0 < row["rto_s"] < 180, row
    assert rep["totals"]["rto_p99_s"] == row["rto_s"] and rep["totals"]["failed_back"] == 1
    kinds = [t["kind"] for t in rep["timeline"]]
    assert "drill.started" in kinds and kinds[-1] == "drill.completed", kinds
    print(json.dumps({"drill": drill_id, "rto_s": row["rto_s"], "estimate": row["estimate_rto_s"]}))
    assert fed.call("DELETE", f"/v1/vnfs/{vnf_id}").status_code == 202
