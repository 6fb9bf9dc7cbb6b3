"""``meridian vnf create --idempotency-key``: a retry is the same VNF, another file a 409."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from broker.cli import vnf
from broker.store import keys
from tests.support import placement as P
from tests.unit.broker.cli.clitest_support import Broker

runner = CliRunner()


def test_create_under_a_key_twice_is_one_vnf(broker: Broker, tmp_path: Path) -> None:
    sites = P.regions(2)
    broker.loop.run(P.seed_store(broker.store, sites, P.paris_latency(sites)))
    first = tmp_path / "vims.yaml"
    first.write_text((P.SAMPLES / "vims.yaml").read_text())
    args = ["create", "-f", str(first), "--idempotency-key", "k-1", "-o", "json"]
    one = runner.invoke(vnf.app, args)
    assert one.exit_code == 0, one.output
    again = runner.invoke(vnf.app, args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["id"] == json.loads(one.stdout)["id"]
    other = tmp_path / "other.yaml"
    other.write_text(first.read_text().replace("name: vims", "name: vims-b"))
    refused = runner.invoke(vnf.app, ["create", "-f", str(other), "--idempotency-key", "k-1"])
    assert refused.exit_code == 1 and "Idempotency-Key" in refused.output, refused.output
    fresh = runner.invoke(vnf.app, ["create", "-f", str(first), "-o", "json"])  # a new key
    assert fresh.exit_code == 0 and json.loads(fresh.stdout)["id"] != json.loads(one.stdout)["id"]
    stored, _ = broker.loop.run(broker.store.get_prefix(keys.VNFS))
    assert len(stored) == 2
