"""``meridian dev up --openstack`` without OpenStack: minicloud's answers and agent settings.

The openstack tier (``tests/integration/openstack/test_devfed_openstack.py``) runs the
whole thing against real minicloud sites; here a stand-in minicloud command (a script at
our own seam) checks how failures are reported, and the generated agent settings are
loaded by the agent's own settings loader.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker import errors
from broker.cli import main
from broker.devfed import minicloud
from broker.devfed.federation import Federation
from siteagent import settings as agent_settings

STATUS = {
    "state_dir": "/srv/mc",
    "clouds_yaml": "/srv/mc/clouds.yaml",
    "venv": "/srv/venv",
    "all_running": True,
    "ports": {},
    "sites": [
        {"name": "site1", "region": "RegionOne", "cloud": "minicloud-site1", "endpoints": {}},
        {"name": "site2", "region": "RegionTwo", "cloud": "minicloud-site2", "endpoints": {}},
    ],
}


def fake_command(tmp_path: Path, *, up_exit: int = 0, status: str = json.dumps(STATUS)) -> Path:
    """A minicloud stand-in: logs its arguments, fails ``up`` on demand, prints ``status``."""
    script = tmp_path / "minicloud"
    log = tmp_path / "calls"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        'case " $* " in\n'
        f'  *" up "*) echo "keystone failed: see log"; exit {up_exit} ;;\n'
        f"  *status*) cat <<'EOF'\n{status}\nEOF\n ;;\n"
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_parse_status_names_sites_by_region_and_cloud() -> None:
    found = minicloud.parse_status(json.dumps(STATUS))
    assert found.clouds_yaml == Path("/srv/mc/clouds.yaml")
    assert [(s.site_id, s.region, s.cloud) for s in found.sites] == [
        ("openstack-site1", "RegionOne", "minicloud-site1"),
        ("openstack-site2", "RegionTwo", "minicloud-site2"),
    ]


@pytest.mark.parametrize(
    "text", ["not json", "{}", json.dumps({**STATUS, "sites": [{"name": "site1"}]})]
)
def test_parse_status_refuses_what_it_does_not_understand(text: str) -> None:
    with pytest.raises(errors.BrokerError, match="minicloud status --json"):
        minicloud.parse_status(text)


def test_parse_status_without_sites() -> None:
    with pytest.raises(errors.BrokerError, match="no sites"):
        minicloud.parse_status(json.dumps({**STATUS, "sites": []}))


def test_ensure_runs_up_then_status_with_the_given_options(tmp_path: Path) -> None:
    command = fake_command(tmp_path)
    found = minicloud.ensure(command, state_dir=tmp_path / "mc", sites=2)
    assert len(found.sites) == 2
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == [
        f"--state-dir {tmp_path / 'mc'} up --quiet --sites 2",
        f"--state-dir {tmp_path / 'mc'} status --json",
    ]


def test_ensure_leaves_minicloud_defaults_alone(tmp_path: Path) -> None:
    command = fake_command(tmp_path)
    minicloud.ensure(command)
    assert (tmp_path / "calls").read_text().splitlines() == ["up --quiet", "status --json"]


def test_ensure_reports_a_failed_up_with_its_output(tmp_path: Path) -> None:
    with pytest.raises(errors.BrokerError, match=r"exit 1(.|\n)*keystone failed"):
        minicloud.ensure(fake_command(tmp_path, up_exit=1))


def test_ensure_without_minicloud_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(errors.BrokerError, match=minicloud.ENV_COMMAND):
        minicloud.ensure(tmp_path / "nowhere" / "minicloud")


def test_default_command_is_the_checkouts_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(minicloud.ENV_COMMAND, raising=False)
    assert minicloud.default_command().is_file()
    monkeypatch.setenv(minicloud.ENV_COMMAND, "/opt/mc/minicloud")
    assert minicloud.default_command() == Path("/opt/mc/minicloud")


def test_openstack_agents_get_the_cloud_name_and_nothing_secret(tmp_path: Path) -> None:
    fed = Federation(state=tmp_path / "dev", brokers=1)
    ids = fed.add_openstack(minicloud.parse_status(json.dumps(STATUS)))
    fed.prepare()
    fed.issue_sites([*ids, "site-001"])

    os_settings = agent_settings.load(fed.agent_config("openstack-site1"), env={})
    assert os_settings.driver == "openstack"
    assert os_settings.openstack.cloud == "minicloud-site1"
    assert os_settings.site_id == "openstack-site1"
    assert "password" not in fed.agent_config("openstack-site1").read_text()
    assert fed._agent_env(["openstack-site1"]) == {"OS_CLIENT_CONFIG_FILE": "/srv/mc/clouds.yaml"}

    sim_settings = agent_settings.load(fed.agent_config("site-001"), env={})
    assert sim_settings.driver == "sim"
    assert fed._agent_env(["site-001"]) is None


def test_dev_up_openstack_fails_clearly_when_minicloud_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(minicloud.ENV_COMMAND, str(fake_command(tmp_path, up_exit=1)))
    state = tmp_path / "dev"
    result = CliRunner().invoke(main.app, ["dev", "up", "--openstack", "--state-dir", str(state)])
    assert result.exit_code == 1
    assert "minicloud up failed" in result.output and "keystone failed" in result.output
    assert not (state / "procs.json").exists()  # nothing was started
