"""Spec validation: every kind's good spec parses; every bad field is named."""

from __future__ import annotations

from typing import Any

import pytest

from siteagent import errors
from siteagent.drivers import base, specs

SHA = "ab" * 32
GOOD: dict[str, dict[str, Any]] = {
    "quota": {"project": "p", "limits": {"cores": 8, "instances": -1}},
    "keypair": {"public_key": "ssh-ed25519 AAAAC3Nz ops@noc"},
    "security_group": {
        "project": "p",
        "rules": [{"direction": "ingress", "protocol": "tcp", "port_min": 22, "port_max": 22}],
    },
    "image": {"disk_format": "qcow2", "size": 1024, "sha256": SHA.upper()},
    "flavor": {
        "vcpus": 4,
        "ram_mb": 4096,
        "extra_specs": {"hw:cpu_policy": "dedicated", "hw:mem_page_size": "1GB"},
    },
    "server_group": {"project": "p", "policy": "anti-affinity"},
    "network": {"project": "p", "network_type": "vlan", "physnet": "physnet1"},
    "subnet": {"project": "p", "network": "n", "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1"},
    "port": {"project": "p", "network": "n", "vnic_type": "direct"},
    "server": {"project": "p", "flavor": "f", "image": "i", "ports": ["a", "b"]},
}


def test_every_known_kind_has_a_parser_and_a_good_example() -> None:
    assert set(GOOD) == set(base.KINDS)


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_good_specs_parse(kind: str) -> None:
    parsed = specs.parse(kind, "x", GOOD[kind])
    assert type(parsed).__name__.lower().replace("spec", "") == kind.replace("_", "")


def test_parsed_values() -> None:
    flavor = specs.parse("flavor", "f", GOOD["flavor"])
    assert isinstance(flavor, specs.FlavorSpec)
    assert (flavor.dedicated, flavor.page_size, flavor.disk_gb) == (True, 1048576, 0)
    image = specs.parse("image", "i", GOOD["image"])
    assert isinstance(image, specs.ImageSpec) and image.sha256 == SHA
    server = specs.parse("server", "s", GOOD["server"])
    assert isinstance(server, specs.ServerSpec) and server.ports == ("a", "b")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("small", "small"),
        ("LARGE", "large"),
        ("any", "any"),
        ("2MB", 2048),
        ("1GB", 1048576),
        ("2048", 2048),
        ("4KB", 4),
    ],
)
def test_page_sizes(text: str, size: specs.PageSize) -> None:
    assert specs.parse_page_size(text) == size


def _with(kind: str, **changes: Any) -> dict[str, Any]:
    spec = dict(GOOD[kind])
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


@pytest.mark.parametrize(
    ("kind", "spec", "field", "problem"),
    [
        ("flavor", _with("flavor", vcpus=None), "vcpus", "is required"),
        ("flavor", _with("flavor", vcpus=0), "vcpus", "integer ≥ 1"),
        ("flavor", _with("flavor", ram_mb=True), "ram_mb", "integer ≥ 1"),
        (
            "flavor",
            _with("flavor", extra_specs={"hw:cpu_policy": "mixed"}),
            "extra_specs.hw:cpu_policy",
            "shared or dedicated",
        ),
        (
            "flavor",
            _with("flavor", extra_specs={"hw:mem_page_size": "huge"}),
            "extra_specs.hw:mem_page_size",
            "not small, large, any",
        ),
        (
            "flavor",
            _with("flavor", extra_specs={"hw:numa_nodes": "2"}),
            "extra_specs.hw:numa_nodes",
            "only 1",
        ),
        ("flavor", _with("flavor", extra_specs={"x": 1}), "extra_specs.x", "must be a string"),
        ("server_group", _with("server_group", policy="spread"), "policy", "one of affinity"),
        ("network", _with("network", physnet=None), "physnet", "required for a vlan"),
        ("network", _with("network", network_type="vxlan"), "physnet", "must not be set"),
        ("network", _with("network", segmentation_id=5000), "segmentation_id", "1-4094"),
        ("network", _with("network", project=""), "project", "non-empty string"),
        ("subnet", _with("subnet", cidr="10.0.0.1/24"), "cidr", "host bits set"),
        ("subnet", _with("subnet", gateway_ip="10.9.0.1"), "gateway_ip", "not inside"),
        ("port", _with("port", vnic_type="weird"), "vnic_type", "one of normal"),
        ("port", _with("port", security_groups="sg"), "security_groups", "list of names"),
        ("server", _with("server", ports=["a", "a"]), "ports", "twice"),
        ("server", _with("server", ports=["a", 3]), "ports[1]", "non-empty string"),
        ("server", _with("server", flavor=None), "flavor", "is required"),
        ("keypair", _with("keypair", public_key="hunter2"), "public_key", "OpenSSH"),
        (
            "security_group",
            _with("security_group", rules=[{"direction": "up"}]),
            "rules[0].direction",
            "ingress",
        ),
        (
            "security_group",
            _with(
                "security_group", rules=[{"direction": "ingress", "port_min": 80, "port_max": 20}]
            ),
            "rules[0].port_max",
            "≥ 80",
        ),
        ("image", _with("image", sha256="abc"), "sha256", "64 hexadecimal"),
        ("image", _with("image", disk_format="zip"), "disk_format", "one of qcow2"),
        ("image", _with("image", size=-1), "size", "≥ 0"),
        ("quota", _with("quota", limits={"cores": -2}), "limits.cores", "≥ -1"),
    ],
)
def test_bad_fields_are_named(kind: str, spec: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(errors.InvalidSpec) as caught:
        specs.parse(kind, "obj", spec)
    assert caught.value.field == field
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"{kind} 'obj': spec.{field}: ")


def test_unknown_fields_are_ignored_for_version_skew() -> None:
    assert specs.parse("port", "p", _with("port", future_field=1)) == specs.parse(
        "port", "p", GOOD["port"]
    )


def test_unknown_kind() -> None:
    with pytest.raises(errors.InvalidSpec, match="unknown kind 'volume'"):
        specs.parse("volume", "v", {})
