"""``meridian sites ...`` against the real API app: table and JSON output, and failures."""

from __future__ import annotations

import json

import pytest

from typer.testing import CliRunner

from broker.cli import sites
from broker.models import codec
from broker.models.site import Health, SiteHealth, SiteStatus
from broker.store import keys
from tests.unit.broker.cli.clitest_support import Broker

runner = CliRunner()


def register(*args: str) -> None:
    result = runner.invoke(sites.app, ["register", *args])
    assert result.exit_code == 0, result.output


def test_register_then_list_as_table_and_json(broker: Broker) -> None:
    result = runner.invoke(
        sites.app,
        [
            "register",
            "edge-1",
            "--region",
            "eu-west",
            "--zone",
            "z1",
            "--label",
            "tier=edge",
            "--label",
            "vendor=x",
            "--failure-domain",
            "power=feed-a",
            "--lat",
            "48.8",
            "--lon",
            "2.3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "registered site edge-1" in result.stdout
    register("edge-2", "--region", "us-east")

    table = runner.invoke(sites.app, ["list"])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    header = next(line for line in lines if "REGION" in line)
    for column in ("ID", "ZONE", "HEALTH", "REPLICA", "LAST HEARTBEAT", "PROTOCOL"):
        assert column in header
    row = next(line for line in lines if "edge-1" in line)
    assert "eu-west" in row and "UNKNOWN" in row

    as_json = runner.invoke(sites.app, ["list", "-o", "json"])
    assert as_json.exit_code == 0
    rows = json.loads(as_json.stdout)
    assert [r["id"] for r in rows] == ["edge-1", "edge-2"]
    assert rows[0]["zone"] == "z1" and rows[1]["health"] == "UNKNOWN"

    shown = runner.invoke(sites.app, ["show", "edge-1", "--output", "json"])
    spec = json.loads(shown.stdout)["spec"]
    assert spec["labels"] == {"tier": "edge", "vendor": "x"}
    assert spec["failure_domains"] == {"power": "feed-a"}
    assert spec["geo"] == {"lat": 48.8, "lon": 2.3}


def test_register_json_output_is_the_spec(broker: Broker) -> None:
    result = runner.invoke(sites.app, ["register", "edge-3", "--region", "r", "-o", "json"])
    assert result.exit_code == 0
    spec = json.loads(result.stdout)
    assert spec["id"] == "edge-3" and spec["region"] == "r" and spec["geo"] is None


def test_show_table_has_status_health_and_heartbeat(broker: Broker) -> None:
    register("edge-1", "--region", "eu-west")
    status = SiteStatus(
        site="edge-1",
        replica="broker-b",
        session_id="s",
        protocol="1.0",
        agent_version="0.1.0",
        connected_ms=1,
        last_heartbeat_ms=2,
    )
    health = SiteHealth(site="edge-1", state=Health.UP, since_ms=3)
    broker.put(keys.sitestatus("edge-1"), codec.encode(status))
    broker.put(keys.health("edge-1"), codec.encode(health))
    result = runner.invoke(sites.app, ["show", "edge-1"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "site edge-1" in out
    assert "broker-b" in out and "UP" in out and "ago" in out and "1.0" in out

    listed = runner.invoke(sites.app, ["list"]).stdout
    row = next(line for line in listed.splitlines() if "edge-1" in line)
    assert "UP" in row and "broker-b" in row and "ago" in row


def test_delete(broker: Broker) -> None:
    register("edge-1", "--region", "r")
    result = runner.invoke(sites.app, ["delete", "edge-1"])
    assert result.exit_code == 0 and "deleted site edge-1" in result.stdout
    again = runner.invoke(sites.app, ["delete", "edge-1"])
    assert again.exit_code == 1
    assert again.stderr.strip() == "error: site 'edge-1' does not exist (HTTP 404)"


def test_duplicate_is_one_line_and_exit_1(broker: Broker) -> None:
    register("edge-1", "--region", "r")
    result = runner.invoke(sites.app, ["register", "edge-1", "--region", "r"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == "error: site 'edge-1' already exists (HTTP 409)"


def test_server_side_validation_names_the_field(broker: Broker) -> None:
    result = runner.invoke(sites.app, ["register", "Edge_1", "--region", "r"])
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: id: must be a lowercase DNS label")
    coords = runner.invoke(
        sites.app, ["register", "e", "--region", "r", "--lat", "95", "--lon", "0"]
    )
    assert coords.exit_code == 1 and "geo.lat" in coords.stderr


def test_local_usage_errors_exit_2(broker: Broker) -> None:
    bad_label = runner.invoke(sites.app, ["register", "e", "--region", "r", "--label", "novalue"])
    assert bad_label.exit_code == 2 and "not key=value" in bad_label.output
    half_geo = runner.invoke(sites.app, ["register", "e", "--region", "r", "--lat", "1"])
    assert half_geo.exit_code == 2 and "--lon" in half_geo.output
    no_region = runner.invoke(sites.app, ["register", "e"])
    assert no_region.exit_code == 2
    assert broker.store.revision == 1


def test_wrong_token_is_explained(broker: Broker) -> None:
    result = runner.invoke(sites.app, ["list", "--token", "wrong"])
    assert result.exit_code == 1
    assert "HTTP 401" in result.stderr and "token" in result.stderr


def test_empty_list_says_how_to_register(broker: Broker) -> None:
    result = runner.invoke(sites.app, ["list"])
    assert result.exit_code == 0 and "meridian sites register" in result.stdout
    assert json.loads(runner.invoke(sites.app, ["list", "-o", "json"]).stdout) == []


def test_list_filters_and_pages_through_every_site(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sites, "PAGE", 2)  # several pages with a handful of sites
    for i in range(7):
        register(
            f"s{i}",
            "--region",
            "eu" if i % 2 else "us",
            "--label",
            f"tier={'edge' if i < 4 else 'core'}",
        )
    broker.put(
        keys.health("s3"),
        codec.encode(SiteHealth(site="s3", state=Health.UP, since_ms=1, decided_by="b")),
    )
    every = json.loads(runner.invoke(sites.app, ["list", "-o", "json"]).stdout)
    assert [s["id"] for s in every] == [f"s{i}" for i in range(7)]
    eu_edge = runner.invoke(
        sites.app, ["list", "-o", "json", "--region", "eu", "--label", "tier=edge"]
    )
    assert [s["id"] for s in json.loads(eu_edge.stdout)] == ["s1", "s3"]
    up = runner.invoke(sites.app, ["list", "-o", "json", "--health", "up"])
    assert [s["id"] for s in json.loads(up.stdout)] == ["s3"]
    three = runner.invoke(sites.app, ["list", "-o", "json", "--limit", "3"])
    assert [s["id"] for s in json.loads(three.stdout)] == ["s0", "s1", "s2"]
    bad = runner.invoke(sites.app, ["list", "--label", "tier"])
    assert bad.exit_code != 0 and "key=value" in bad.output
