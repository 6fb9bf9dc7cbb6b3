"""``meridian quota show|set|usage`` against the real API app: table, JSON, failures."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from broker.cli import quota
from tests.unit.broker.cli.clitest_support import Broker

runner = CliRunner()
T = "0123456789abcdef0123456789abcdef"


def test_set_merges_then_show_and_usage(broker: Broker) -> None:
    first = runner.invoke(
        quota.app, ["set", T, "--limit", "cores=8", "--site-limit", "edge-1:cores=2"]
    )
    assert first.exit_code == 0, first.output
    assert "set the quota of" in first.stdout
    second = runner.invoke(quota.app, ["set", T, "--limit", "instances=-1", "-o", "json"])
    assert second.exit_code == 0, second.output
    data = json.loads(second.stdout)
    assert data["quota"]["limits"] == {"cores": 8, "instances": -1}  # merged, not replaced
    assert data["quota"]["sites"] == {"edge-1": {"cores": 2}}

    shown = runner.invoke(quota.app, ["show", T])
    assert shown.exit_code == 0, shown.output
    assert "unlimited" in shown.stdout and "(default)" in shown.stdout

    usage = runner.invoke(quota.app, ["usage", T])
    assert usage.exit_code == 0, usage.output
    header = next(line for line in usage.stdout.splitlines() if "RESOURCE" in line)
    for column in ("LIMIT", "USED", "RESERVED", "LEFT"):
        assert column in header
    as_json = json.loads(runner.invoke(quota.app, ["usage", T, "-o", "json"]).stdout)
    assert {line["resource"] for line in as_json["global"]} >= {"cores", "sriov_vfs"}


def test_bad_input_is_one_red_line_naming_the_field(broker: Broker) -> None:
    result = runner.invoke(quota.app, ["set", T, "--limit", "cores=-5"])
    assert result.exit_code == 1
    assert "limits.cores" in result.output and "Traceback" not in result.output
    usage_error = runner.invoke(quota.app, ["set", T, "--limit", "cores"])
    assert usage_error.exit_code == 2
