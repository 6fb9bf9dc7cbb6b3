"""Descriptors: the samples validate; bad input is refused naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from broker import errors
from broker.models import vnf
from tests.support import placement as P


@pytest.mark.parametrize("name", ["vfirewall", "vepc-upf", "vims", "stitched-pair"])
def test_samples_parse(name: str) -> None:
    desc = P.sample(name)
    assert desc.api_version == vnf.API_VERSION
    assert vnf.members(desc)


def test_sample_expansion() -> None:
    assert [m.role for m in vnf.members(P.sample("vfirewall"))] == ["active", "standby"]
    upf = vnf.members(P.sample("vepc-upf"))
    assert [m.role for m in upf].count("standby") == 1 and len(upf) == 5
    need = upf[0].need
    assert need.dedicated and need.page_size_kb == 2048 and need.vfs == (("physnet1", 2),)
    ims = P.sample("vims")
    assert ims.vdus[0].scope == "region" and len(vnf.members(ims)) == 3
    assert vnf.deltas(P.sample("vfirewall"))["sriov_vfs"] == 4


def _base() -> dict[str, Any]:
    return vnf.to_json(P.sample("vfirewall"))


def _set(path: str, value: Any) -> dict[str, Any]:
    data = _base()
    node: Any = data
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if value is _DROP:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = copy.deepcopy(value)
    return data


_DROP = object()

BAD = [
    ("apiVersion", "meridian.nfv/v9", "apiVersion"),
    ("kind", "Vnf", "kind"),
    ("name", "Has Spaces", "name"),
    ("tenant", _DROP, "tenant"),
    ("vdus", [], "vdus"),
    ("vdus.0.virtual_compute.num_virtual_cpu", 0, "vdus[0].virtual_compute.num_virtual_cpu"),
    ("vdus.0.virtual_compute.hugepage_size", "4KB", "vdus[0].virtual_compute.hugepage_size"),
    ("vdus.0.virtual_compute.cpu_pinning", "isolate", "vdus[0].virtual_compute.cpu_pinning"),
    ("vdus.0.redundancy.model", "triple", "vdus[0].redundancy.model"),
    ("vdus.0.anti_affinity", "galaxy", "vdus[0].anti_affinity"),
    (
        "vdus.0.connection_points.1.virtual_link",
        "nowhere",
        "vdus[0].connection_points[1].virtual_link",
    ),
    ("virtual_links.1.physnet", None, "virtual_links[1].physnet"),
    ("virtual_links.1.stitched", True, "virtual_links[1].stitched"),
    ("virtual_links.0.stitched", "maybe", "virtual_links[0].stitched"),
    ("sw_images.0.checksum", "abc", "sw_images[0].checksum"),
    ("vdus.0.unknown_field", 1, "vdus[0].unknown_field"),
    ("anti_affinity", [{"targets": ["nope"], "scope": "site"}], "anti_affinity[0].targets[0]"),
]


@pytest.mark.parametrize(("path", "value", "field"), BAD, ids=[b[2] for b in BAD])
def test_bad_descriptor_names_the_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        vnf.parse(_set(path, value))
    assert caught.value.field == field, caught.value


def test_yaml_and_json_text() -> None:
    text = (P.SAMPLES / "vims.yaml").read_text()
    assert vnf.parse(text) == vnf.parse(vnf.to_json(vnf.parse(text)))
    with pytest.raises(errors.InvalidInput, match="descriptor"):
        vnf.parse("- just\n- a list\n")


def test_schema_is_versioned() -> None:
    schema = vnf.schema()
    assert "meridian.nfv/v1" in schema["$id"]
    assert "vdus" in schema["properties"]


def test_a_stitched_link_is_a_vxlan_overlay_in_the_schema() -> None:
    desc = P.sample("stitched-pair")
    assert [(v.name, v.stitched) for v in desc.virtual_links] == [("mgmt", False), ("sync", True)]
    link = vnf.schema()["$defs"]["VirtualLink"]["properties"]["stitched"]
    assert link["type"] == "boolean" and link["default"] is False
    assert "l2-stretched" in link["description"]
    with pytest.raises(errors.InvalidInput, match="VXLAN overlay between sites, not vlan"):
        vnf.parse(_set("virtual_links.1.stitched", True))
