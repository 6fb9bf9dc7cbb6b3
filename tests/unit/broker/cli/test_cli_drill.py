"""``meridian drill plan`` and ``meridian report survivability`` against the real API app."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from broker.cli.main import app
from broker.models import codec
from broker.models import vnf as model
from broker.store import keys
from tests.support import placement as P
from tests.support.drills import reported
from tests.support.placement import SiteDef
from tests.unit.broker.cli.clitest_support import Broker

runner = CliRunner()


def seed(broker: Broker) -> None:
    for d in (SiteDef("s1", "r1"), SiteDef("s2", "r1"), SiteDef("s3", "r2")):
        for key, value in P.site_keys(d):
            broker.put(key, value)
    raw = model.load_text((P.SAMPLES / "vfirewall.yaml").read_text())
    members = (
        model.MemberStatus("fw-0", "fw", "active", "s1", "s1-cmp-000", 0, "READY"),
        model.MemberStatus("fw-1", "fw", "standby", "s2", "s2-cmp-000", 0, "READY"),
    )
    rec = model.VnfRecord("fw1", "acme-nfv", raw, model.VnfState.ACTIVE, members=members)
    broker.put(keys.vnf("fw1"), codec.encode(rec))


def test_plan_table_and_json(broker: Broker) -> None:
    seed(broker)
    shown = runner.invoke(app, ["drill", "plan", "--site", "s1"])
    assert shown.exit_code == 0, shown.output
    assert "absorbable" in shown.stdout and "fw-1@s2" in shown.stdout and "fw-0→s3" in shown.stdout
    data = json.loads(runner.invoke(app, ["drill", "plan", "--region", "r1", "-o", "json"]).stdout)
    assert data["result"]["lost_sites"] == ["s1", "s2"] and not data["result"]["absorbable"]


def test_plan_without_scope_is_a_usage_error(broker: Broker) -> None:
    result = runner.invoke(app, ["drill", "plan"])
    assert result.exit_code == 1 and "name a scope" in result.output


def test_survivability_report(broker: Broker) -> None:
    seed(broker)
    shown = runner.invoke(app, ["report", "survivability"])
    assert shown.exit_code == 0, shown.output
    assert "region" in shown.stdout and "scopes not survivable" in shown.stdout
    data = json.loads(runner.invoke(app, ["report", "survivability", "-o", "json"]).stdout)
    rows = {f"{r['scope_kind']}:{r['scope']}": r["survivable"] for r in data["scopes"]}
    assert rows["site:s1"] and not rows["region:r1"]


def test_run_abort_list_show(broker: Broker) -> None:
    seed(broker)
    started = runner.invoke(app, ["drill", "run", "--site", "s1", "--no-wait", "-o", "json"])
    assert started.exit_code == 0, started.output
    doc = json.loads(started.stdout)
    assert (doc["state"], doc["sites"]) == ("PLANNED", ["s1"])
    again = runner.invoke(app, ["drill", "run", "--site", "s1", "--no-wait"])
    assert again.exit_code == 1 and doc["id"] in again.output, "one drill at a time"
    listed = runner.invoke(app, ["drill", "list"])
    assert listed.exit_code == 0 and doc["id"] in listed.stdout and "PLANNED" in listed.stdout
    shown = runner.invoke(app, ["drill", "show", doc["id"]])
    assert shown.exit_code == 0 and "PLANNED" in shown.stdout
    aborted = runner.invoke(app, ["drill", "abort", doc["id"]])
    assert aborted.exit_code == 0 and "abort asked" in aborted.stdout
    early = runner.invoke(app, ["drill", "report", doc["id"]])
    assert early.exit_code == 1 and "nothing measured yet" in early.output


def test_report_tables_json_and_html(broker: Broker, tmp_path: Path) -> None:
    doc = reported("fw1")
    rep = doc["report"]
    broker.put(keys.drill("drill-x"), json.dumps(doc).encode())
    shown = runner.invoke(app, ["drill", "report", "drill-x"])
    assert shown.exit_code == 0, shown.output
    assert "original roles restored" in shown.stdout and "drill.started" in shown.stdout
    data = json.loads(runner.invoke(app, ["drill", "report", "drill-x", "-o", "json"]).stdout)
    assert data == rep
    page = tmp_path / "r.html"
    wrote = runner.invoke(app, ["drill", "report", "drill-x", "--html", str(page)])
    assert wrote.exit_code == 0 and "<svg" in page.read_text()
    listed = json.loads(runner.invoke(app, ["drill", "list", "-o", "json"]).stdout)
    assert listed[0]["rto_p99_s"] == 1.5


def test_plan_and_run_select_by_label(broker: Broker) -> None:
    seed(broker)  # the sample vFirewall: labels app=vfirewall, tier=perimeter
    args = ["drill", "plan", "--site", "s1", "-o", "json"]
    got = json.loads(runner.invoke(app, [*args, "--label", "app=vfirewall"]).stdout)
    assert [v["vnf"] for v in got["result"]["vnfs"]] == ["fw1"]
    none = json.loads(runner.invoke(app, [*args, "--label", "app=vims"]).stdout)
    assert none["result"]["vnfs"] == [] and none["selector"] == {"labels": {"app": "vims"}}
    bad = runner.invoke(app, ["drill", "run", "--site", "s1", "--label", "app"])
    assert bad.exit_code == 1 and "KEY=VALUE" in bad.output


def test_run_isolating_the_site(broker: Broker) -> None:
    seed(broker)
    args = ["drill", "run", "--site", "s1", "--isolate-site", "--label", "tier=perimeter"]
    started = runner.invoke(app, [*args, "--no-wait", "-o", "json"])
    assert started.exit_code == 0, started.output
    doc = json.loads(started.stdout)
    assert doc["isolate"] is True and doc["selector"] == {"labels": {"tier": "perimeter"}}
