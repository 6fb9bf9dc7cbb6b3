"""``meridian vnf heal`` and ``meridian site drain|undrain`` against the real API app:
table and JSON output, and clear errors (issue 10)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from broker.cli import sites, vnf
from broker.store import keys
from tests.unit.broker.cli.clitest_support import Broker
from tests.unit.broker.controllers.test_failover_controller import VNF, seed

runner = CliRunner()


def test_heal_with_nothing_to_heal_says_so(broker: Broker) -> None:
    broker.loop.run(seed(broker.store))
    result = runner.invoke(vnf.app, ["heal", VNF])
    assert result.exit_code == 1
    assert "nothing to heal" in result.stderr
    assert broker.loop.run(broker.store.get(keys.failover_asked(VNF))) is None
    result = runner.invoke(vnf.app, ["heal", "nope"])
    assert result.exit_code == 1 and "HTTP 404" in result.stderr


def test_drain_and_undrain_as_table_and_json(broker: Broker) -> None:
    broker.loop.run(seed(broker.store))
    missing = runner.invoke(sites.app, ["drain", "s1"])
    assert missing.exit_code == 1 and "HTTP 404" in missing.stderr
    assert runner.invoke(sites.app, ["register", "s1", "--region", "r1"]).exit_code == 0

    table = runner.invoke(sites.app, ["drain", "s1"])
    assert table.exit_code == 0, table.output
    assert "drain of site s1 asked" in table.stdout
    header = next(line for line in table.stdout.splitlines() if "SITE" in line)
    assert "DRAINING" in header and "VNFS AT SITE" in header
    row = next(line for line in table.stdout.splitlines() if "│ s1 " in line)
    assert "yes" in row and "1" in row

    as_json = runner.invoke(sites.app, ["undrain", "s1", "-o", "json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == {
        "site": "s1",
        "draining": False,
        "was_draining": True,
        "vnfs": [VNF],
    }
    assert broker.loop.run(broker.store.get(keys.drain("s1"))) is None
