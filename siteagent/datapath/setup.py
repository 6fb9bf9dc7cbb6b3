"""Build the agent's data-path driver from its settings, and load a local profile.

A site managed locally declares its profile in a YAML file (``datapath.profile_file``);
it is submitted as generation 1 of the ``datapath`` object at start, exactly as if the
broker had sent it, so the same checks, ordering and statuses apply. A file that cannot
be read or parsed stops the agent with ``SettingsError``.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import yaml

from siteagent import errors, models
from siteagent.datapath import driver as dpdriver
from siteagent.datapath import manager as dpm
from siteagent.datapath import ovs
from siteagent.datapath import profile as dp
from siteagent.drivers.base import Driver
from siteagent.hardware import writer
from siteagent.reconciler import Reconciler
from siteagent.settings import AgentSettings


def datapath_driver(inner: Driver, settings: AgentSettings) -> dpdriver.DatapathDriver:
    cfg = settings.datapath
    switch = ovs.OvsSwitch(cfg.ovsdb, rundir=cfg.ovs_rundir) if cfg.ovsdb else None
    manager = dpm.Manager(writer.SysfsWriter(settings.hardware.sysfs_root), switch, writer.IpLink())
    return dpdriver.DatapathDriver(inner, manager, host=cfg.host or socket.gethostname())


def load_profile_file(path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise errors.SettingsError([f"datapath.profile_file: cannot read {path}: {exc}"]) from exc
    except yaml.YAMLError as exc:
        raise errors.SettingsError([f"datapath.profile_file: {path} is not YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise errors.SettingsError([f"datapath.profile_file: {path} is not a mapping"])
    return data


async def submit_local_profile(reconciler: Reconciler, settings: AgentSettings) -> None:
    path = settings.datapath.profile_file
    if not path:
        return
    spec = load_profile_file(path)
    await reconciler.submit(models.DesiredObject(dp.KIND, dp.NAME, 1, spec))
