"""The agent's data-path settings: the driver built from them, and a local profile file."""

from __future__ import annotations

from pathlib import Path

import pytest

from siteagent import errors, models, reconciler, settings
from siteagent.datapath import profile as dp
from siteagent.datapath import setup
from siteagent.drivers import sim

BASE = {
    "site_id": "s1",
    "tls": {"ca_file": "ca", "cert_file": "c", "key_file": "k"},
}


def agent(tmp_path: Path, **datapath: object) -> settings.AgentSettings:
    return settings.load(
        env={},
        overrides={**BASE, "hardware": {"sysfs_root": str(tmp_path)}, "datapath": datapath},
    )


def test_settings_validated_with_their_path(tmp_path: Path) -> None:
    with pytest.raises(errors.SettingsError) as caught:
        agent(tmp_path, enabled=True, drift_interval=0)
    assert any(p.startswith("datapath.drift_interval") for p in caught.value.problems)
    with pytest.raises(errors.SettingsError):
        agent(tmp_path, enabled=True, unknown=1)


def test_driver_without_ovs_names_its_host(tmp_path: Path) -> None:
    cfg = agent(tmp_path, enabled=True, host="s1-cmp-001")
    driver = setup.datapath_driver(sim.SimSite.generated("s1", hosts=1), cfg)
    assert driver.host == "s1-cmp-001" and driver.manager.switch is None


async def test_local_profile_is_generation_one(tmp_path: Path) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text("policy: report\nhugepages: []\n")
    cfg = agent(tmp_path, enabled=True, profile_file=str(path))
    rec = reconciler.Reconciler(sim.SimSite.generated("s1", hosts=1))
    await setup.submit_local_profile(rec, cfg)
    assert not await rec.submit(models.DesiredObject(dp.KIND, dp.NAME, 1, {}))  # held already


@pytest.mark.parametrize(("text", "says"), [("- a\n- b\n", "not a mapping"), ("a: [", "not YAML")])
def test_bad_local_profile_stops_the_agent(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    with pytest.raises(errors.SettingsError) as caught:
        setup.load_profile_file(str(path))
    assert says in str(caught.value)
    with pytest.raises(errors.SettingsError):
        setup.load_profile_file(str(tmp_path / "missing.yaml"))
