"""``meridian site(s) datapath set|show`` against the real API app."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from broker.cli import main
from broker.models import objects
from broker.store import keys
from tests.unit.broker.cli.clitest_support import Broker

runner = CliRunner()
PROFILE = """\
hugepages:
  - {node: 0, page_size_kb: 2048, count: 64}
ovs:
  other_config: {pmd-cpu-mask: "0x6"}
  bridges:
    - {name: br-dp, datapath_type: netdev}
"""


def test_set_then_show_with_what_the_agent_observed(broker: Broker, tmp_path: Path) -> None:
    assert runner.invoke(main.app, ["sites", "register", "edge-1", "--region", "r"]).exit_code == 0
    profile = tmp_path / "profile.yaml"
    profile.write_text(PROFILE)
    result = runner.invoke(main.app, ["site", "datapath", "set", "edge-1", "-f", str(profile)])
    assert result.exit_code == 0, result.output
    assert "data-path profile at generation 1" in result.stdout
    shown = runner.invoke(main.app, ["site", "datapath", "show", "edge-1"])
    assert "not reported yet" in shown.stdout
    status = objects.Status(
        "datapath",
        "host",
        1,
        objects.State.FAILED,
        "datapath 'host': spec.sriov.0.pf: unknown PF 'ens9'; nothing was changed",
    )
    broker.put(keys.observed("edge-1", "datapath", "host"), status.encode())
    shown = runner.invoke(main.app, ["sites", "datapath", "show", "edge-1", "-o", "json"])
    body = json.loads(shown.stdout)
    assert body["profile"]["ovs"]["other_config"] == {"pmd-cpu-mask": "0x6"}
    assert body["observed"]["state"] == "FAILED"
    table = runner.invoke(main.app, ["sites", "datapath", "show", "edge-1"]).stdout
    assert "FAILED" in table and "unknown PF" in table


def test_unknown_site_is_one_line(broker: Broker, tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(PROFILE)
    result = runner.invoke(main.app, ["site", "datapath", "set", "nope", "-f", str(profile)])
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: site 'nope' does not exist (HTTP 404)"
