"""Trunk ports in port specs: subports parse in order; every bad subport field is named."""

from __future__ import annotations

from typing import Any

import pytest

from siteagent import errors
from siteagent.drivers import specs

BASE: dict[str, Any] = {"project": "p", "network": "n"}


def _port(trunk: Any) -> specs.PortSpec:
    parsed = specs.parse("port", "parent", {**BASE, "trunk": trunk})
    assert isinstance(parsed, specs.PortSpec)
    return parsed


def test_a_port_without_trunk_has_none() -> None:
    parsed = specs.parse("port", "parent", BASE)
    assert isinstance(parsed, specs.PortSpec) and parsed.trunk is None


def test_subports_parse_in_order_with_vlan_as_the_default_type() -> None:
    parsed = _port(
        {
            "subports": [
                {"port": "a", "segmentation_type": "vlan", "segmentation_id": 101},
                {"port": "b", "segmentation_id": 102},
            ]
        }
    )
    assert parsed.trunk == specs.TrunkSpec(
        subports=(
            specs.Subport(port="a", segmentation_id=101),
            specs.Subport(port="b", segmentation_id=102, segmentation_type="vlan"),
        )
    )


def test_a_trunk_without_subports_is_still_a_trunk() -> None:
    assert _port({}).trunk == specs.TrunkSpec()
    assert _port({"subports": []}).trunk == specs.TrunkSpec()


@pytest.mark.parametrize(
    ("trunk", "field", "problem"),
    [
        ("yes", "trunk", "must be an object"),
        ({"subports": {"port": "a"}}, "trunk.subports", "must be a list"),
        ({"subports": ["a"]}, "trunk.subports[0]", "must be an object"),
        ({"subports": [{"segmentation_id": 5}]}, "trunk.subports[0].port", "is required"),
        ({"subports": [{"port": "a"}]}, "trunk.subports[0].segmentation_id", "is required"),
        (
            {"subports": [{"port": "a", "segmentation_id": 0}]},
            "trunk.subports[0].segmentation_id",
            "≥ 1",
        ),
        (
            {"subports": [{"port": "a", "segmentation_id": 4095}]},
            "trunk.subports[0].segmentation_id",
            "1-4094",
        ),
        (
            {"subports": [{"port": "a", "segmentation_id": 7, "segmentation_type": "inherit"}]},
            "trunk.subports[0].segmentation_type",
            "must be one of vlan",
        ),
        (
            {"subports": [{"port": "parent", "segmentation_id": 7}]},
            "trunk.subports[0].port",
            "its own parent",
        ),
        (
            {
                "subports": [
                    {"port": "a", "segmentation_id": 7},
                    {"port": "a", "segmentation_id": 8},
                ]
            },
            "trunk.subports[1].port",
            "twice",
        ),
        (
            {
                "subports": [
                    {"port": "a", "segmentation_id": 7},
                    {"port": "b", "segmentation_id": 7},
                ]
            },
            "trunk.subports[1].segmentation_id",
            "VLAN 7 is used twice",
        ),
    ],
)
def test_bad_trunks_name_the_field(trunk: Any, field: str, problem: str) -> None:
    with pytest.raises(errors.InvalidSpec) as caught:
        specs.parse("port", "parent", {**BASE, "trunk": trunk})
    assert caught.value.field == field
    assert problem in caught.value.problem
    assert (caught.value.kind, caught.value.name) == ("port", "parent")
