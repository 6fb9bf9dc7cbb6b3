"""Policies resolve against registered sites (table-driven)."""

from __future__ import annotations

import pytest

from replication import errors, policy
from replication.catalog import SiteId

SITES = [
    policy.SiteInfo(SiteId("eu1"), "eu", {"tier": "core"}),
    policy.SiteInfo(SiteId("eu2"), "eu", {"tier": "edge"}),
    policy.SiteInfo(SiteId("us1"), "us", {"tier": "edge"}),
]


@pytest.mark.parametrize(
    ("pol", "want"),
    [
        (policy.Selector.parse("region=eu"), {"eu1", "eu2"}),
        (policy.Selector.parse("tier=edge"), {"eu2", "us1"}),
        (policy.Selector.parse("region=eu, tier=edge"), {"eu2"}),
        (policy.Selector.parse("region=ap"), set()),
        (policy.AllSites(), {"eu1", "eu2", "us1"}),
        (policy.OnDemand(SiteId("us1")), {"us1"}),
    ],
)
def test_resolve(pol: policy.Policy, want: set[str]) -> None:
    assert policy.resolve(pol, SITES) == want


@pytest.mark.parametrize("text", ["", "region", "=eu", "region=", ",,"])
def test_bad_selectors(text: str) -> None:
    with pytest.raises(errors.InvalidImage):
        policy.Selector.parse(text)


def test_on_demand_unknown_site_is_an_error() -> None:
    with pytest.raises(errors.UnknownSite):
        policy.resolve(policy.OnDemand(SiteId("nope")), SITES)


def test_on_demand_goes_first() -> None:
    assert policy.priority(policy.OnDemand(SiteId("x"))) > policy.priority(policy.AllSites())
