"""The datapath kind beside a sim site: statuses, the rebuilt inventory, drift reports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.support import hosttree

from siteagent import errors, models
from siteagent.datapath import driver as dpdriver
from siteagent.datapath import manager as dpm
from siteagent.datapath import profile as dp
from siteagent.drivers import sim
from siteagent.hardware import writer

HOST = "s1-cmp-002"
SPEC = {"sriov": [{"pf": hosttree.PF, "vfs": 6, "physnet": "physnet9"}]}


@pytest.fixture
def driver(tmp_path: Path) -> dpdriver.DatapathDriver:
    tree = hosttree.lay_out(tmp_path)
    manager = dpm.Manager(writer.SysfsWriter(tree), None, hosttree.RecordingLinks())
    return dpdriver.DatapathDriver(
        sim.SimSite.generated("s1", hosts=3, cells=2), manager, host=HOST
    )


async def test_profile_applied_and_inventory_rebuilt_for_its_host(
    driver: dpdriver.DatapathDriver,
) -> None:
    changed: list[bool] = []
    driver.on_inventory = lambda: changed.append(True)
    status = await driver.apply(models.DesiredObject(dp.KIND, dp.NAME, 3, SPEC))
    assert status.state is models.ObjectState.READY and status.observed_generation == 3
    assert status.outputs[f"pf.{hosttree.PF}"] == (
        f"pci={hosttree.PF_PCI} vendor=0x8086 device=0x158b driver=i40e link=up totalvfs=16 vfs=6"
    )
    assert changed == [True]
    assert await driver.observe(dp.KIND, dp.NAME) == status
    inventory = await driver.inventory()
    hosts = {h.name: h for h in inventory.hosts}
    assert hosts[HOST].traits[dpm.SRIOV] == "true"
    pools = [p for c in hosts[HOST].cells for p in c.sriov if p.physnet == "physnet9"]
    assert [(p.device, p.vfs_total) for p in pools] == [(hosttree.PF, 6)]
    assert all(dpm.SRIOV not in h.traits for n, h in hosts.items() if n != HOST)


async def test_other_kinds_go_to_the_site_driver(driver: dpdriver.DatapathDriver) -> None:
    flavor = models.DesiredObject("flavor", "f1", 1, {"vcpus": 1, "ram_mb": 512, "disk_gb": 1})
    status = await driver.apply(flavor)
    assert status.kind == "flavor" and status.state is models.ObjectState.READY


async def test_only_one_datapath_object_per_site(driver: dpdriver.DatapathDriver) -> None:
    with pytest.raises(errors.InvalidSpec) as caught:
        await driver.apply(models.DesiredObject(dp.KIND, "other", 1, SPEC))
    assert caught.value.field == "name"


async def test_watch_reports_drift_as_the_objects_status(
    driver: dpdriver.DatapathDriver, tmp_path: Path
) -> None:
    await driver.apply(models.DesiredObject(dp.KIND, dp.NAME, 2, SPEC))
    reported: list[models.ObjectStatus] = []
    seen = asyncio.Event()

    def report(status: models.ObjectStatus) -> None:
        reported.append(status)
        seen.set()

    hosttree.write(tmp_path, f"sys/class/net/{hosttree.PF}/device/sriov_numvfs", "2\n")
    watch = asyncio.create_task(driver.watch(0.01, report))
    try:
        async with asyncio.timeout(10):
            await seen.wait()
    finally:
        watch.cancel()
    [status] = reported
    assert status.observed_generation == 2
    assert status.message == f"drift corrected: {hosttree.PF}: 2 VFs, profile says 6"
    assert status.outputs["drift"] == f"{hosttree.PF}: 2 VFs, profile says 6"
    assert hosttree.numvfs(tmp_path) == 6


async def test_delete_forgets_the_profile(driver: dpdriver.DatapathDriver) -> None:
    await driver.apply(models.DesiredObject(dp.KIND, dp.NAME, 1, SPEC))
    status = await driver.delete(dp.KIND, dp.NAME)
    assert status.state is models.ObjectState.DELETED
    assert await driver.observe(dp.KIND, dp.NAME) is None
    inventory = await driver.inventory()
    assert all(dpm.SRIOV not in h.traits for h in inventory.hosts)
