"""The agent's own machine is a host of its site only when configured to be one."""

from __future__ import annotations

from pathlib import Path

from siteagent import running, settings


def laid_out_host(root: Path) -> Path:
    for relative, text in {
        "sys/devices/system/cpu/online": "0-3\n",
        "proc/meminfo": "MemTotal:  8388608 kB\nMemFree:  4194304 kB\n",
    }.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def agent(tmp_path: Path, **hardware: object) -> settings.AgentSettings:
    return settings.load(
        env={},
        overrides={
            "site_id": "edge-1",
            "tls": {"ca_file": "ca", "cert_file": "c", "key_file": "k"},
            "sim": {"hosts": 2, "cells": 1},
            "hardware": {"sysfs_root": str(laid_out_host(tmp_path)), **hardware},
        },
    )


async def test_by_default_the_agents_machine_is_not_a_host(tmp_path: Path) -> None:
    config = agent(tmp_path)
    assert config.hardware.compute_host is False
    inventory = await running.make_driver(config).inventory()
    assert len(inventory.hosts) == 2


async def test_configured_as_a_compute_host_the_machine_joins_the_inventory(
    tmp_path: Path,
) -> None:
    driver = running.make_driver(agent(tmp_path, compute_host=True))
    hosts = (await driver.inventory()).hosts
    assert len(hosts) == 3
    (cell,) = hosts[-1].cells
    assert (cell.cpus_total, cell.memory_mb) == (4, 8192)
    await driver.close()
