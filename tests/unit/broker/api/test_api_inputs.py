"""Attack tests for input bounds: every refused body is a 4xx naming the field, and
nothing is written (the store's revision does not move).

Trailing newlines (which ``re.match(...$)`` let through), oversized strings, numbers,
maps and lists, control characters in region/zone, and YAML bombs in descriptors.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from broker.store.memory import MemoryStore
from tests.unit.broker.api.apitest_support import ADMIN, SITE, assert_problem
from tests.unit.broker.api.test_api_images import body as image
from tests.unit.broker.api.test_api_images import sites
from tests.unit.broker.models.test_yamlbound import billion_laughs

BAD_IMAGES: dict[str, tuple[dict[str, Any], str]] = {
    "id-trailing-newline": (image(id="cirros-1\n"), "id"),
    "id-too-long": (image(id="a" * 129), "id"),
    "name-too-long": (image(name="n" * 256), "name"),
    "name-empty": (image(name=""), "name"),
    "size-petabytes": (image(size=2**60), "size"),
    "sha-trailing-newline": (image(sha256=image()["sha256"] + "\n"), "sha256"),
    "source-trailing-newline": (image(source_site="src\n"), "source_site"),
    "too-many-properties": (image(properties={f"k{i}": "v" for i in range(65)}), "properties"),
    "huge-property": (image(properties={"os_distro": "x" * 2000}), "properties"),
    "control-in-property": (image(properties={"os_distro": "a\nb"}), "properties"),
    "bad-property-key": (image(properties={"a b": "x"}), "properties"),
    "too-many-targets": (image(replicate_to=["src"] * 5000), "replicate_to"),
    "huge-policy": (image(policy="region=" + "e" * 300), "policy"),
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
async def test_bad_image_is_422_and_writes_nothing(
    api: httpx.AsyncClient, memstore: MemoryStore, name: str
) -> None:
    await sites(memstore)
    before = memstore.revision
    data, field = BAD_IMAGES[name]
    resp = await api.post("/v1/images", json=data, headers=ADMIN)
    problem = assert_problem(resp, 422)
    assert problem["field"].split(".")[0] == field, problem
    assert memstore.revision == before


async def test_glance_style_properties_are_accepted(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    await sites(memstore)
    props = {"hw:cpu_policy": "dedicated", "os_distro": "cirros", "hw_disk_bus": "virtio"}
    resp = await api.post("/v1/images", json=image(properties=props), headers=ADMIN)
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize("field", ["region", "zone"])
@pytest.mark.parametrize("value", ["eu\n", "eu west", "<b>eu</b>", "eu/../x", "é", "-eu", "x" * 64])
async def test_region_and_zone_take_a_safe_character_set(
    api: httpx.AsyncClient, memstore: MemoryStore, field: str, value: str
) -> None:
    resp = await api.post("/v1/sites", json={**SITE, field: value}, headers=ADMIN)
    assert_problem(resp, 422, field=field)
    assert memstore.revision == 1


async def test_openstack_region_names_are_accepted(api: httpx.AsyncClient) -> None:
    resp = await api.post("/v1/sites", json={**SITE, "region": "RegionOne"}, headers=ADMIN)
    assert resp.status_code == 201, resp.text


async def test_billion_laughs_descriptor_is_422_and_writes_nothing(
    api: httpx.AsyncClient, memstore: MemoryStore
) -> None:
    before = memstore.revision
    resp = await api.post("/v1/vnfs", content=billion_laughs(), headers=ADMIN)
    assert_problem(resp, 422, field="descriptor", detail_has="aliases")
    assert memstore.revision == before
