"""Survivability (N+1) for site, zone and region scopes on a hand-built federation."""

from __future__ import annotations

from typing import Any

import pytest

from broker.drills import survivability, whatif
from broker.models import vnf as model
from broker.settings import BrokerSettings
from tests.support import placement as P
from tests.support.placement import CellShape, SiteDef

TINY = CellShape(cpus=2, pcpus=1, memory_mb=1024, pages_1g=0, vfs={"physnet1": 0})


def fw(vnf_id: str, active: str, standby: str) -> whatif.Placed:
    desc = P.sample("vfirewall")
    members = (
        model.MemberStatus("fw-0", "fw", "active", active, f"{active}-cmp-000", 0, "READY"),
        model.MemberStatus("fw-1", "fw", "standby", standby, f"{standby}-cmp-000", 0, "READY"),
    )
    rec = model.VnfRecord(vnf_id, desc.tenant, {}, model.VnfState.ACTIVE, members=members)
    return whatif.Placed(rec, desc)


def rows(tiny: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    snap = P.world(
        [
            SiteDef(s, r, zone=z, shapes=(TINY, TINY) if s in tiny else (CellShape(),) * 2)
            for s, r, z in [
                ("a", "r1", "z1"),
                ("b", "r1", "z2"),
                ("c", "r2", "z1"),
                ("d", "r2", "z1"),
            ]
        ]
    )
    placed = [fw("v1", "a", "b"), fw("v2", "c", "d")]
    out = survivability.report(snap, placed, BrokerSettings())
    assert out["vnfs"] == 2
    return {f"{r['scope_kind']}:{r['scope']}": r for r in out["scopes"]}


def test_every_site_zone_and_region_is_reported() -> None:
    assert set(rows()) == {
        "site:a",
        "site:b",
        "site:c",
        "site:d",
        "zone:r1/z1",
        "zone:r1/z2",
        "zone:r2/z1",
        "region:r1",
        "region:r2",
    }


def test_site_loss_absorbed_by_promotion_and_replacement() -> None:
    r = rows()
    for site in "abcd":
        assert r[f"site:{site}"]["survivable"], r[f"site:{site}"]
        assert r[f"site:{site}"]["affected"] == 1


def test_zone_loss() -> None:
    r = rows()
    assert r["zone:r1/z2"]["survivable"]
    zone = r["zone:r2/z1"]  # both members of v2
    assert not zone["survivable"] and zone["lose_service"] == ["v2"] and zone["rebuilt"] == ["v2"]


def test_region_loss_lists_outages_degraded_and_shortfall() -> None:
    r = rows(tiny=("c", "d"))
    region = r["region:r1"]  # v1 loses both members and r2 has no room for either
    assert not region["survivable"]
    assert region["lose_service"] == ["v1"] and region["rebuilt"] == []
    assert region["shortfall"] == {"pcpus": 8, "memory_mb": 16384, "vfs:physnet1": 4}
    site = r["site:a"]  # v1 keeps serving on b, but its replacement has nowhere to go
    assert not site["survivable"] and site["lose_service"] == [] and site["stay_degraded"] == ["v1"]


def test_the_report_decides_as_one_what_if_per_scope() -> None:
    """One ranker and index shared over every scope decide as a fresh what-if each."""
    snap = P.world([SiteDef(f"s{i}", f"r{i % 3}", zone=f"z{i % 2}") for i in range(9)])
    placed = [fw(f"v{i}", f"s{i}", f"s{(i + 1) % 9}") for i in range(9)]
    out = survivability.report(snap, placed, BrokerSettings())
    for kind, name, scope in survivability.scopes(snap):
        alone = whatif.run(snap, placed, scope, BrokerSettings())
        row = next(r for r in out["scopes"] if (r["scope_kind"], r["scope"]) == (kind, name))
        assert row == survivability.entry(kind, name, alone)


def test_stored_form_keeps_untouched_scopes_by_name_and_gives_the_report_back() -> None:
    snap = P.world([SiteDef(s, "r1", zone="z1") for s in ("a", "b", "c", "d", "e")])
    out = survivability.report(snap, [fw("v1", "a", "b")], BrokerSettings())
    packed = survivability.pack(out)
    kept = {f"{r['scope_kind']}:{r['scope']}" for r in packed["scopes"]}
    assert kept == {"site:a", "site:b", "zone:r1/z1", "region:r1"}  # the scopes v1 is in
    assert packed["untouched"] == {"site": ["c", "d", "e"]}
    assert survivability.unpack(packed) == out


class _NoWalk(list[Any]):
    def __iter__(self) -> Any:
        raise AssertionError("a site scope walked every site of the snapshot")


def test_a_site_scope_does_not_walk_the_snapshot() -> None:
    snap = P.world([SiteDef(s, "r1", zone="z1") for s in ("a", "b")])
    snap.order = _NoWalk(snap.order)
    assert whatif.Scope(sites=("a", "x")).lost(snap) == ({"a"}, set())
    with pytest.raises(AssertionError, match="walked"):
        whatif.Scope(regions=("r1",)).lost(snap)
