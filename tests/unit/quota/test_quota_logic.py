"""The pure quota logic, table by table: validation, admission, site limits, drift."""

from __future__ import annotations

from typing import Any

import pytest

from quota import admission, errors, sync
from quota.models import (
    DEFAULTS,
    UNLIMITED,
    Account,
    EffectiveLimits,
    Hold,
    ReservationId,
    SiteAccount,
    TenantId,
    TenantQuota,
    deltas,
    limits,
    tenant_id,
)

T = TenantId("0123456789abcdef0123456789abcdef")

# -- validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"cores": -2}, "limits.cores"),
        ({"cores": 10**12}, "limits.cores"),
        ({"vcpus": 4}, "limits.vcpus"),
        ({"cores": "4"}, "limits.cores"),
        ({"cores": 4.5}, "limits.cores"),
        ({"cores": True}, "limits.cores"),
        ([1, 2], "limits"),
    ],
)
def test_bad_limits_name_the_field(data: Any, field: str) -> None:
    with pytest.raises(errors.InvalidQuota) as caught:
        limits(data)
    assert caught.value.field == field


def test_good_limits() -> None:
    assert limits({"cores": -1, "instances": 0, "ram_mb": 1_000_000}) == {
        "cores": UNLIMITED, "instances": 0, "ram_mb": 1_000_000,
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"limits": {"cores": -5}}, "limits.cores"),
        ({"regions": {"EU West": {"cores": 1}}}, "regions.EU West"),
        ({"sites": {"edge-1": {"gpus": 1}}}, "sites.edge-1.gpus"),
        ({"quota_class": "Gold!"}, "quota_class"),
        ({"limit": {}}, "limit"),
        ("nope", "body"),
    ],
)
def test_bad_tenant_quota_names_the_field(body: Any, field: str) -> None:
    with pytest.raises(errors.InvalidQuota) as caught:
        TenantQuota.parse(body)
    assert caught.value.field == field


@pytest.mark.parametrize("bad", ["", "a/b", "x" * 65, "proj id", "../etc", 42])
def test_malformed_tenant_ids(bad: Any) -> None:
    with pytest.raises(errors.InvalidQuota) as caught:
        tenant_id(bad)
    assert caught.value.field == "tenant"


@pytest.mark.parametrize(
    ("data", "field"),
    [({}, "deltas"), ({"cores": 0}, "deltas"), ({"gpus": 1}, "deltas.gpus"),
     ({"cores": 10**10}, "deltas.cores")],
)
def test_bad_deltas(data: Any, field: str) -> None:
    with pytest.raises(errors.InvalidQuota) as caught:
        deltas(data)
    assert caught.value.field == field


def test_effective_limits_layer_defaults_class_and_tenant() -> None:
    quota = TenantQuota(limits={"cores": 8}, quota_class="gold")
    found = EffectiveLimits.resolve(quota, {"cores": 100, "instances": 50})
    assert found.global_["cores"] == 8  # tenant wins
    assert found.global_["instances"] == 50  # class over default
    assert found.global_["volumes"] == DEFAULTS["volumes"]


# -- admission ----------------------------------------------------------------------


def hold(rid: str, site: str = "", region: str = "", **amounts: int) -> Hold:
    return Hold(ReservationId(rid), amounts, site, region, 0, 1)


ACCOUNT = Account(
    {
        "edge-1": SiteAccount("eu", {"cores": 4, "instances": 2}),
        "edge-2": SiteAccount("us", {"cores": 2, "instances": 1}),
    }
)
LIMITS = EffectiveLimits(
    global_={**DEFAULTS, "cores": 10, "instances": UNLIMITED},
    regions={"eu": {"cores": 6}},
    sites={"edge-2": {"instances": 1}},
)

ADMISSION_CASES: list[tuple[str, dict[str, int], list[Hold], str, str, str | None, int]] = [
    # name, deltas, holds, site, region, refused class (None: admitted), left
    ("fits", {"cores": 4}, [], "", "", None, 0),
    ("exactly full", {"cores": 2}, [hold("a", cores=2)], "", "", None, 0),
    ("over by reservations", {"cores": 3}, [hold("a", cores=2)], "", "", "cores", 2),
    ("unlimited class", {"instances": 1000}, [], "", "", None, 0),
    ("deletion always fits", {"cores": -4}, [hold("a", cores=4)], "", "", None, 0),
    ("mixed: only growth checked", {"cores": 4, "ram_mb": -512}, [], "", "", None, 0),
    ("region limit", {"cores": 3}, [], "edge-1", "eu", "cores", 2),
    ("region holds count", {"cores": 1}, [hold("a", "edge-3", "eu", cores=1)], "edge-1", "eu",
     None, 0),
    ("site limit", {"instances": 1}, [], "edge-2", "us", "instances", 0),
    ("negative holds free nothing", {"cores": 5}, [hold("a", cores=-4)], "", "", "cores", 4),
]


@pytest.mark.parametrize(
    ("name", "wanted", "holds", "site", "region", "refused", "left"),
    ADMISSION_CASES, ids=[c[0] for c in ADMISSION_CASES],
)
def test_admission(
    name: str, wanted: dict[str, int], holds: list[Hold], site: str, region: str,
    refused: str | None, left: int,
) -> None:
    if refused is None:
        admission.check(T, LIMITS, ACCOUNT, holds, wanted, site=site, region=region)
        return
    with pytest.raises(errors.QuotaExceeded) as caught:
        admission.check(T, LIMITS, ACCOUNT, holds, wanted, site=site, region=region)
    assert caught.value.resource == refused
    assert caught.value.left == left
    assert caught.value.requested == wanted[refused]
    assert refused in str(caught.value) and f"{left} left" in str(caught.value)


def test_limit_below_usage_is_over_limit_and_refuses_growth() -> None:
    tight = EffectiveLimits({**DEFAULTS, "cores": 3}, {}, {})
    lines = {line.resource: line for line in admission.report(tight, ACCOUNT, [])}
    assert lines["cores"].over_limit and lines["cores"].left == 0
    assert not lines["instances"].over_limit
    with pytest.raises(errors.QuotaExceeded):
        admission.check(T, tight, ACCOUNT, [], {"cores": 1})
    admission.check(T, tight, ACCOUNT, [], {"cores": -1})  # shrinking is fine


def test_adjustments_count_as_usage() -> None:
    account = Account({"edge-1": SiteAccount("eu", {"cores": 4}, {"cores": 3})})
    assert account.used("cores") == 7
    negative = Account({"edge-1": SiteAccount("eu", {"cores": 4}, {"cores": -9})})
    assert negative.used("cores") == 0


# -- per-site push ------------------------------------------------------------------

SITES = {"a": "eu", "b": "eu", "c": "us"}
SYNC_CASES: list[tuple[str, dict[str, int], dict[str, dict[str, int]], dict[str, int], int]] = [
    # name, committed at a/b/c (cores), reported cores per site, headroom, limit pushed to "a"
    ("nothing used", {}, {}, {}, 10),
    ("others' usage shrinks", {"b": 3, "c": 2}, {}, {}, 5),
    ("own usage does not", {"a": 7}, {}, {}, 10),
    ("out of band counts", {"b": 3}, {"c": {"cores": 4}}, {}, 3),
    ("report below ledger: ledger", {"b": 3}, {"b": {"cores": 1}}, {}, 7),
    ("headroom", {"b": 3}, {}, {"cores": 2}, 9),
    ("never negative", {"b": 30}, {}, {}, 0),
    # one site's report counts for at most a step (20 cores) beyond the ledger at once
    ("absurd report: bounded", {}, {"c": {"cores": 1_000_000}}, {"cores": 25}, 15),
]


@pytest.mark.parametrize(
    ("name", "committed", "reported", "headroom", "expected"),
    SYNC_CASES, ids=[c[0] for c in SYNC_CASES],
)
def test_site_limits(
    name: str, committed: dict[str, int], reported: dict[str, dict[str, int]],
    headroom: dict[str, int], expected: int,
) -> None:
    account = Account({s: SiteAccount(SITES[s], {"cores": n}) for s, n in committed.items()})
    limits_ = EffectiveLimits({**DEFAULTS, "cores": 10, "instances": UNLIMITED}, {}, {})
    pushed = sync.site_limits(limits_, account, reported, SITES, "a", headroom)
    assert pushed["cores"] == expected
    assert pushed["instances"] == UNLIMITED


def test_site_limits_respect_region_and_site_limits() -> None:
    account = Account({"b": SiteAccount("eu", {"cores": 2}), "c": SiteAccount("us", {"cores": 5})})
    limits_ = EffectiveLimits(
        {**DEFAULTS, "cores": 100}, {"eu": {"cores": 6}}, {"a": {"cores": 3}}
    )
    assert sync.site_limits(limits_, account, {}, SITES, "a")["cores"] == 3
    assert sync.site_limits(limits_, account, {}, SITES, "b")["cores"] == 6
    assert sync.site_limits(limits_, account, {}, SITES, "c")["cores"] == 98


def test_drift_table() -> None:
    account = Account({"a": SiteAccount("eu", {"cores": 4, "instances": 1})})
    counted = {"a": {"cores", "instances"}, "b": {"ports"}}
    found = sync.drift(account, {"a": {"cores": 6, "instances": 1}, "b": {"ports": 2}}, counted)
    assert [(d.site, d.resource, d.amount) for d in found] == [
        ("a", "cores", 2), ("b", "ports", 2),
    ]
    assert sync.adjustment(found, "a") == {"cores": 2}
    gone = sync.drift(account, {}, {"a": {"cores", "instances"}})
    assert sync.adjustment(gone, "a") == {"cores": -4, "instances": -1}


def test_a_class_a_site_does_not_report_never_drifts() -> None:
    """Invariant 12: the sim counts no pinned cores, so committed ones are not 0 in use."""
    account = Account({"a": SiteAccount("eu", {"cores": 4, "pinned_cores": 4})})
    report = {"t1": {"cores": 4, "instances": 1}, "t2": {"ram_mb": 512}}
    counted = {"a": sync.reported_classes(report)}
    assert counted["a"] == {"cores", "instances", "ram_mb"}
    found = sync.drift(account, {"a": report["t1"]}, counted)
    assert [(d.resource, d.amount) for d in found] == [("instances", 1)]
    assert sync.drift(account, {}, {"a": frozenset()}) == []  # an empty report: unknown


def test_one_record_moves_an_adjustment_a_bounded_step() -> None:
    bound = {"cores": 20, "instances": 10}
    assert sync.step({}, {"cores": 1_000_000}, bound) == {"cores": 20}
    assert sync.step({"cores": 20}, {"cores": 1_000_000}, bound) == {"cores": 40}
    assert sync.step({"cores": 5}, {"cores": -7}, bound) == {"cores": -7}
    assert sync.step({"pinned_cores": -4}, {}, bound) == {"pinned_cores": -3}
    assert sync.step({"instances": 3}, {"instances": 3}, bound) == {"instances": 3}
