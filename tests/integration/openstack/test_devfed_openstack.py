"""``meridian dev up --openstack``: the local federation with agents on real OpenStack sites.

The command is run as a user runs it (a subprocess, ``--detach``), against the openstack
tier's minicloud (the session fixture starts or reuses it; the command's own ``minicloud
up`` is then a no-op). Through the broker's API the minicloud site must come UP with an
inventory that the agent read from Nova and Placement: checked against Placement itself.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.devfed.federation import Federation
from broker.devfed.minicloud import site_id_for

from tests.support.minicloud import REPO, Minicloud
from tests.support.polling import wait_for

pytestmark = [pytest.mark.openstack, pytest.mark.slow, pytest.mark.e2e, pytest.mark.etcd]

SIM_SITE = "site-001"
OS_SITE = site_id_for("site1")


def meridian(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli.main", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def devfed(minicloud: Minicloud, tmp_path: Path) -> Iterator[Federation]:
    state = tmp_path / "dev"
    common = ["--state-dir", str(state)]
    done = meridian(
        "dev",
        "up",
        "--openstack",
        "--minicloud-state",
        str(minicloud.state_dir),
        "--sites",
        "1",
        "--brokers",
        "2",
        "--detach",
        *common,
    )
    try:
        assert done.returncode == 0, f"dev up failed:\n{done.stdout}\n{done.stderr}"
        assert "3/3 sites UP" in done.stdout, done.stdout  # both minicloud sites + 1 sim
        yield Federation.load(state)
    finally:
        stopped = meridian("dev", "down", *common, timeout=120)
        print(stopped.stdout, stopped.stderr)


def placement_totals(conn: Any) -> tuple[int, int, int]:
    """Compute hosts, usable vCPUs and MiB of RAM, as Placement itself reports them."""
    hosts = cpus = memory = 0
    for rp in conn.placement.resource_providers():
        if rp.parent_provider_id not in (None, rp.id):
            continue
        inventories = {
            inv.resource_class: inv for inv in conn.placement.resource_provider_inventories(rp)
        }
        if "VCPU" not in inventories and "PCPU" not in inventories:
            continue
        hosts += 1
        for rc in ("VCPU", "PCPU"):
            if rc in inventories:
                cpus += inventories[rc].total - inventories[rc].reserved
        memory += inventories["MEMORY_MB"].total - inventories["MEMORY_MB"].reserved
    return hosts, cpus, memory


def test_openstack_site_comes_up_with_its_real_inventory(devfed: Federation, conn: Any) -> None:
    sites = {s["id"]: s for s in devfed.api_get("/v1/sites")["sites"]}
    assert sites[OS_SITE]["health"] == "UP" and sites[SIM_SITE]["health"] == "UP", sites

    shown = devfed.api_get(f"/v1/sites/{OS_SITE}")
    assert shown["spec"]["region"] == "RegionOne", shown
    assert shown["spec"]["labels"] == {"driver": "openstack"}

    hosts, cpus, memory = placement_totals(conn)
    assert hosts == 2, "minicloud runs two nova-compute hosts per site"
    inventory = wait_for(
        lambda: devfed.api_get(f"/v1/sites/{OS_SITE}")["inventory"],
        timeout=60,
        what=f"{OS_SITE}'s inventory",
    )
    assert inventory["hosts"] == hosts, inventory
    assert inventory["cpus"] == cpus, inventory
    assert inventory["memory_mb"] == memory, inventory
    # the sim site beside it reports its own, simulated, inventory
    assert devfed.api_get(f"/v1/sites/{SIM_SITE}")["inventory"]["hosts"] == 4

    # the agent's settings name the cloud; its credentials stayed in minicloud's clouds.yaml
    config = (devfed.state / "agents" / f"{OS_SITE}.toml").read_text()
    assert 'driver = "openstack"' in config and "password" not in config
