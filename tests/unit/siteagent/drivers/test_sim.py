"""The simulated site: accounting, idempotence per generation, references, faults."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siteagent import errors, models
from siteagent.drivers import base, sim

SITE_YAML = """
site: edge-1
cpu_allocation_ratio: 2.0
hosts:
  - name: cmp-a
    traits: {CUSTOM_DPDK: "true"}
    cells:
      - {id: 0, cpus: 8, pcpus: 4, memory_mb: 16384, hugepages: {2048: 1024, 1048576: 4},
         sriov: [{physnet: physnet1, device: ens1f0, vfs: 2}]}
      - {id: 1, cpus: 8, pcpus: 4, memory_mb: 16384, hugepages: {1048576: 8},
         sriov: [{physnet: physnet2, device: ens2f0, vfs: 4}]}
  - name: cmp-b
    cells:
      - {id: 0, cpus: 4, memory_mb: 8192}
"""
DEDICATED = {"hw:cpu_policy": "dedicated", "hw:mem_page_size": "1GB"}
SHA = "0" * 64


def obj(kind: str, name: str, spec: dict[str, Any], generation: int = 1) -> models.DesiredObject:
    return models.DesiredObject(kind=kind, name=name, generation=generation, spec=spec)


async def seeded(site: sim.SimSite) -> sim.SimSite:
    """Flavors, an image, networks on both physnets and a few ports."""
    for o in [
        obj("flavor", "pinned-4", {"vcpus": 4, "ram_mb": 4096, "extra_specs": DEDICATED}),
        obj("flavor", "pinned-2", {"vcpus": 2, "ram_mb": 2048, "extra_specs": DEDICATED}),
        obj("flavor", "shared-2", {"vcpus": 2, "ram_mb": 2048}),
        obj("image", "vrouter", {"disk_format": "qcow2", "size": 10, "sha256": SHA}),
        obj(
            "network", "fronthaul", {"project": "p1", "network_type": "vlan", "physnet": "physnet2"}
        ),
        obj("network", "mgmt", {"project": "p1"}),
        obj("port", "fh-1", {"project": "p1", "network": "fronthaul", "vnic_type": "direct"}),
        obj("port", "fh-2", {"project": "p1", "network": "fronthaul", "vnic_type": "direct"}),
        obj("port", "mgmt-1", {"project": "p1", "network": "mgmt"}),
    ]:
        await site.apply(o)
    return site


@pytest.fixture
async def site() -> sim.SimSite:
    return await seeded(sim.SimSite.from_yaml(SITE_YAML))


def cell(inv: models.Inventory, host: str, cell_id: int) -> models.NumaCell:
    return next(c for h in inv.hosts if h.name == host for c in h.cells if c.id == cell_id)


def server(name: str, flavor: str, ports: list[str] | None = None, **more: Any) -> dict[str, Any]:
    return {"project": "p1", "flavor": flavor, "image": "vrouter", "ports": ports or [], **more}


async def test_inventory_from_yaml_before_any_claim() -> None:
    inv = await sim.SimSite.from_yaml(SITE_YAML).inventory()
    assert [h.name for h in inv.hosts] == ["cmp-a", "cmp-b"]
    assert inv.hosts[0].traits == {"CUSTOM_DPDK": "true"}
    assert inv.collected_unix_ms > 0
    assert cell(inv, "cmp-a", 0) == models.NumaCell(
        id=0,
        cpus_total=8,
        pcpus_total=4,
        memory_mb=16384,
        hugepages=(models.HugePages(2048, 1024, 1024), models.HugePages(1048576, 4, 4)),
        sriov=(models.SriovPool("physnet1", "ens1f0", 2, 0),),
    )


async def test_dedicated_server_claims_one_cell(site: sim.SimSite) -> None:
    status = await site.apply(obj("server", "du-1", server("du-1", "pinned-4", ["fh-1", "fh-2"])))
    assert status.state is models.ObjectState.READY
    # cell 0 has no physnet2 VFs: the whole claim lands on cell 1
    assert (status.outputs["host"], status.outputs["numa_cell"]) == ("cmp-a", "1")
    assert status.outputs["page_size_kb"] == "1048576"
    inv = await site.inventory()
    assert cell(inv, "cmp-a", 1) == models.NumaCell(
        id=1,
        cpus_total=8,
        pcpus_total=4,
        pcpus_used=4,
        memory_mb=16384,
        hugepages=(models.HugePages(1048576, 8, 4),),
        sriov=(models.SriovPool("physnet2", "ens2f0", 4, 2),),
    )
    assert cell(inv, "cmp-a", 0).pcpus_used == 0
    usage = await site.usage()
    assert usage.projects["p1"] == {
        "instances": 1,
        "cores": 4,
        "ram_mb": 4096,
        "networks": 2,
        "ports": 3,
    }


async def test_shared_server_uses_vcpus_and_small_pages(site: sim.SimSite) -> None:
    status = await site.apply(obj("server", "vm", server("vm", "shared-2", ["mgmt-1"])))
    inv = await site.inventory()
    claimed = cell(inv, status.outputs["host"], int(status.outputs["numa_cell"]))
    assert (claimed.vcpus_used, claimed.pcpus_used, claimed.memory_used_mb) == (2, 0, 2048)


async def test_same_generation_twice_claims_once(site: sim.SimSite) -> None:
    first = await site.apply(obj("server", "du-1", server("du-1", "pinned-2", ["fh-1"])))
    inv, usage = await site.inventory(), await site.usage()
    again = await site.apply(obj("server", "du-1", server("du-1", "pinned-2", ["fh-1"])))
    assert again == first
    assert _claims(await site.inventory()) == _claims(inv)
    assert await site.usage() == usage


async def test_an_older_generation_changes_nothing(site: sim.SimSite) -> None:
    await site.apply(obj("server", "du-1", server("du-1", "pinned-2"), generation=5))
    stale = await site.apply(obj("server", "du-1", server("du-1", "pinned-4"), generation=4))
    assert stale.observed_generation == 5
    assert (await site.usage()).projects["p1"]["cores"] == 2


async def test_higher_generation_resizes_without_double_claims(site: sim.SimSite) -> None:
    await site.apply(obj("server", "du-1", server("du-1", "pinned-2")))
    status = await site.apply(obj("server", "du-1", server("du-1", "pinned-4"), generation=2))
    assert status.observed_generation == 2
    inv = await site.inventory()
    assert sum(c.pcpus_used for h in inv.hosts for c in h.cells) == 4
    assert (await site.usage()).projects["p1"]["cores"] == 4


async def test_unchanged_resources_keep_their_place(site: sim.SimSite) -> None:
    """An update that does not change what a server needs does not move it."""
    await site.apply(obj("server", "a", server("a", "pinned-2")))
    b = await site.apply(obj("server", "b", server("b", "pinned-2")))
    await site.delete("server", "a")
    moved = await site.apply(obj("server", "b", server("b", "pinned-2", keypair=None), 2))
    assert moved.outputs["numa_cell"] == b.outputs["numa_cell"] == "0"
    assert moved.outputs["host"] == b.outputs["host"]


async def test_no_host_fits_is_permanent_and_claims_nothing(site: sim.SimSite) -> None:
    await site.apply(obj("flavor", "huge", {"vcpus": 5, "ram_mb": 1024, "extra_specs": DEDICATED}))
    before = _claims(await site.inventory())
    with pytest.raises(errors.DriverError) as caught:
        await site.apply(obj("server", "big", server("big", "huge")))
    assert not caught.value.temporary
    assert "no host fits: needs 5 dedicated pCPUs, 1024 MiB in 1048576 pages" in str(caught.value)
    assert _claims(await site.inventory()) == before
    assert await site.observe("server", "big") is None


async def test_failed_resize_keeps_the_old_claim(site: sim.SimSite) -> None:
    await site.apply(obj("flavor", "huge", {"vcpus": 5, "ram_mb": 1024, "extra_specs": DEDICATED}))
    await site.apply(obj("server", "du-1", server("du-1", "pinned-2")))
    before = (_claims(await site.inventory()), await site.usage())
    with pytest.raises(errors.DriverError, match="no host fits"):
        await site.apply(obj("server", "du-1", server("du-1", "huge"), generation=2))
    assert (_claims(await site.inventory()), await site.usage()) == before
    status = await site.observe("server", "du-1")
    assert status is not None and status.observed_generation == 1


@pytest.mark.parametrize(
    ("kind", "spec", "missing"),
    [
        ("port", {"project": "p1", "network": "nowhere"}, "network 'nowhere' not found"),
        ("subnet", {"project": "p1", "network": "x", "cidr": "10.0.0.0/8"}, "network 'x'"),
        (
            "port",
            {"project": "p1", "network": "mgmt", "security_groups": ["web"]},
            "security_group 'web' not found",
        ),
        ("server", server("s", "nope"), "flavor 'nope' not found"),
        ("server", server("s", "shared-2", ["ghost"]), "port 'ghost' not found"),
        ("server", server("s", "shared-2", server_group="g"), "server_group 'g' not found"),
        ("server", server("s", "shared-2", keypair="k"), "keypair 'k' not found"),
    ],
)
async def test_missing_references_are_temporary(
    site: sim.SimSite, kind: str, spec: dict[str, Any], missing: str
) -> None:
    with pytest.raises(errors.DriverError, match=missing) as caught:
        await site.apply(obj(kind, "s", spec))
    assert caught.value.temporary
    assert errors.retry_delay(caught.value) == 1.0


async def test_bad_spec_names_the_field(site: sim.SimSite) -> None:
    with pytest.raises(errors.InvalidSpec) as caught:
        await site.apply(obj("flavor", "f", {"vcpus": "four", "ram_mb": 1}))
    assert caught.value.field == "vcpus"


async def test_direct_port_on_overlay_network_fails_binding(site: sim.SimSite) -> None:
    await site.apply(
        obj("port", "bad", {"project": "p1", "network": "mgmt", "vnic_type": "direct"})
    )
    with pytest.raises(errors.DriverError, match="has no physical network") as caught:
        await site.apply(obj("server", "s", server("s", "shared-2", ["bad"])))
    assert not caught.value.temporary


async def test_a_port_serves_one_server(site: sim.SimSite) -> None:
    await site.apply(obj("server", "a", server("a", "shared-2", ["mgmt-1"])))
    with pytest.raises(errors.DriverError, match="in use by server 'a'"):
        await site.apply(obj("server", "b", server("b", "shared-2", ["mgmt-1"])))


async def test_deletes_in_use_wait_and_then_succeed(site: sim.SimSite) -> None:
    await site.apply(obj("server", "du", server("du", "pinned-2", ["fh-1"])))
    for kind, name, user in [("port", "fh-1", "server 'du'"), ("network", "fronthaul", "port")]:
        with pytest.raises(errors.DriverError, match=f"in use by .*{user}") as caught:
            await site.delete(kind, name)
        assert caught.value.temporary
    gone = await site.delete("server", "du")
    assert (gone.state, gone.observed_generation) == (models.ObjectState.DELETED, 1)
    for kind, name in [("port", "fh-1"), ("port", "fh-2"), ("network", "fronthaul")]:
        assert (await site.delete(kind, name)).state is models.ObjectState.DELETED
    assert (await site.delete("network", "fronthaul")).observed_generation == 0
    assert all(c.sriov[0].vfs_used == 0 for c in (await site.inventory()).hosts[0].cells)


async def test_bound_port_cannot_move(site: sim.SimSite) -> None:
    await site.apply(obj("server", "du", server("du", "pinned-2", ["fh-1"])))
    moved = obj("port", "fh-1", {"project": "p1", "network": "fronthaul"}, generation=2)
    with pytest.raises(errors.DriverError, match="bound to a server cannot change"):
        await site.apply(moved)


async def test_anti_affinity_spreads_and_affinity_packs(site: sim.SimSite) -> None:
    await site.apply(obj("server_group", "spread", {"project": "p1", "policy": "anti-affinity"}))
    await site.apply(obj("server_group", "pack", {"project": "p1", "policy": "affinity"}))
    hosts = set()
    for name in ("a", "b"):
        status = await site.apply(
            obj("server", name, server(name, "shared-2", server_group="spread"))
        )
        hosts.add(status.outputs["host"])
    assert hosts == {"cmp-a", "cmp-b"}
    with pytest.raises(errors.DriverError, match="no host fits"):
        await site.apply(obj("server", "c", server("c", "shared-2", server_group="spread")))
    packed = {
        (await site.apply(obj("server", n, server(n, "shared-2", server_group="pack")))).outputs[
            "host"
        ]
        for n in ("d", "e", "f")
    }
    assert len(packed) == 1


async def test_quota_objects_limit_a_project(site: sim.SimSite) -> None:
    await site.apply(obj("quota", "p1-limits", {"project": "p1", "limits": {"cores": 4}}))
    await site.apply(obj("server", "a", server("a", "shared-2")))
    await site.apply(obj("server", "a", server("a", "pinned-4"), generation=2))  # 4 of 4
    with pytest.raises(errors.DriverError, match="quota exceeded for cores: 6 of 4") as caught:
        await site.apply(obj("server", "b", server("b", "shared-2")))
    assert not caught.value.temporary
    await site.delete("quota", "p1-limits")
    assert (await site.apply(obj("server", "b", server("b", "shared-2")))).state.name == "READY"


async def test_fault_injection(site: sim.SimSite) -> None:
    site.fail_next("network", message="neutron 503", retry_after=7.0)
    site.fail_next("network", temporary=False, message="bad request", op="delete")
    with pytest.raises(errors.DriverError, match="neutron 503") as first:
        await site.apply(obj("network", "n2", {"project": "p1"}))
    assert errors.retry_delay(first.value) == 7.0
    assert (await site.apply(obj("network", "n2", {"project": "p1"}))).state.name == "READY"
    with pytest.raises(errors.DriverError, match="bad request") as second:
        await site.delete("network", "n2")
    assert errors.retry_delay(second.value) is None
    assert (await site.delete("network", "n2")).state.name == "DELETED"


async def test_building_servers_are_pending_until_polled() -> None:
    site = await seeded(sim.SimSite.from_dict({**_yaml_dict(), "build_polls": 2}))
    status = await site.apply(obj("server", "s", server("s", "shared-2")))
    assert status.state is models.ObjectState.PENDING
    first = await site.observe("server", "s")
    assert first is not None and first.state is models.ObjectState.PENDING
    second = await site.observe("server", "s")
    assert second is not None and second.state is models.ObjectState.READY
    assert second.outputs == status.outputs


async def test_ids_are_deterministic_per_site_kind_and_name() -> None:
    one = await seeded(sim.SimSite.from_yaml(SITE_YAML))
    two = await seeded(sim.SimSite.from_yaml(SITE_YAML))
    other = await seeded(sim.SimSite.from_yaml(SITE_YAML.replace("edge-1", "edge-2")))
    ids = [(await s.observe("network", "mgmt")) for s in (one, two, other)]
    assert ids[0] is not None and ids[1] is not None and ids[2] is not None
    assert ids[0].outputs["id"] == ids[1].outputs["id"] != ids[2].outputs["id"]
    port = await one.observe("port", "fh-1")
    assert port is not None and port.outputs["mac_address"].startswith("fa:16:3e:")


async def test_unknown_kind_is_invalid(site: sim.SimSite) -> None:
    with pytest.raises(errors.InvalidSpec, match="unknown kind 'volume'"):
        await site.apply(obj("volume", "v", {}))


def test_generated_sites_are_deterministic() -> None:
    a = sim.SimSite.generated("edge-9", hosts=3, cells=2, seed=1).config
    assert a == sim.SimSite.generated("edge-9", hosts=3, cells=2, seed=1).config
    assert len(a.hosts) == 3 and all(len(h.cells) == 2 for h in a.hosts)
    assert {p.physnet for h in a.hosts for c in h.cells for p in c.sriov} == {
        "physnet1",
        "physnet2",
    }


async def test_a_thousand_generated_sites_are_cheap() -> None:
    started = time.perf_counter()
    sites = [sim.SimSite.generated(f"site-{i:04d}", hosts=4) for i in range(1000)]
    for s in sites:
        await seeded(s)
        await s.apply(obj("server", "du", server("du", "pinned-4", ["fh-1"])))
    elapsed = time.perf_counter() - started
    assert all(s.calls == 10 for s in sites)
    assert elapsed < 30, f"1000 sites took {elapsed:.1f}s"  # a generous safety bound


def _yaml_dict() -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(SITE_YAML)
    assert isinstance(data, dict)
    return data


def _claims(inv: models.Inventory) -> list[tuple[int, ...]]:
    return [
        (
            c.pcpus_used,
            c.vcpus_used,
            c.memory_used_mb,
            *(p.free for p in c.hugepages),
            *(p.vfs_used for p in c.sriov),
        )
        for h in inv.hosts
        for c in h.cells
    ]


# -- random sequences ---------------------------------------------------------------------

FLAVORS = ["pinned-4", "pinned-2", "shared-2"]
op_strategy = st.one_of(
    st.tuples(
        st.just("apply"),
        st.sampled_from(["s1", "s2", "s3", "s4"]),
        st.sampled_from(FLAVORS),
        st.lists(st.sampled_from(["fh-1", "fh-2", "mgmt-1"]), max_size=2, unique=True),
        st.integers(min_value=1, max_value=4),
    ),
    st.tuples(st.just("delete"), st.sampled_from(["s1", "s2", "s3", "s4"])),
)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
)
@given(ops=st.lists(op_strategy, max_size=25))
async def test_random_sequences_keep_claims_within_capacity(ops: list[tuple[Any, ...]]) -> None:
    site = await seeded(sim.SimSite.from_yaml(SITE_YAML))
    pristine = _claims(await site.inventory())
    generations: dict[str, int] = {}
    for op in ops:
        try:
            if op[0] == "apply":
                _, name, flavor, ports, bump = op
                generations[name] = generations.get(name, 0) + bump
                await site.apply(
                    obj("server", name, server(name, flavor, ports), generations[name])
                )
            else:
                await site.delete("server", op[1])
        except errors.DriverError:
            pass
        _assert_within_capacity(await site.inventory(), await site.usage())
    for name in ("s1", "s2", "s3", "s4"):
        await site.delete("server", name)
    assert _claims(await site.inventory()) == pristine
    assert "instances" not in (await site.usage()).projects["p1"]


def _assert_within_capacity(inv: models.Inventory, usage: models.Usage) -> None:
    for h in inv.hosts:
        for c in h.cells:
            assert 0 <= c.pcpus_used <= c.pcpus_total
            assert 0 <= c.vcpus_used <= (c.cpus_total - c.pcpus_total) * 2
            assert 0 <= c.memory_used_mb <= c.memory_mb
            assert all(0 <= p.free <= p.total for p in c.hugepages)
            assert all(0 <= p.vfs_used <= p.vfs_total for p in c.sriov)
    for amounts in usage.projects.values():
        assert all(n > 0 for n in amounts.values())
    servers = usage.projects["p1"].get("instances", 0)
    assert servers <= 4
    assert sum(c.pcpus_used + c.vcpus_used for h in inv.hosts for c in h.cells) == usage.projects[
        "p1"
    ].get("cores", 0)


def test_sim_satisfies_the_driver_protocol() -> None:
    driver: base.Driver = sim.SimSite.generated("x")
    assert driver is not None
