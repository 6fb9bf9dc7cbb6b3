"""``meridian events`` (incl. --follow) and ``meridian leader`` against the real API app."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from broker.cli import events, leader, sites
from broker.models import codec
from broker.models.event import Event
from broker.store import keys
from tests.unit.broker.cli.clitest_support import Broker

runner = CliRunner()
app = typer.Typer()
app.command("events")(events.events)
app.command("leader")(leader.leader)


def seed(broker: Broker, n: int, start: int = 0) -> list[Event]:
    made = []
    for i in range(start, start + n):
        at = 1_700_000_000_000 + i * 1000
        event = Event(
            id=f"{at:013d}-{i:08x}",
            at_ms=at,
            kind="site.up",
            subject=f"edge-{i % 2}",
            message=f"event {i}",
            replica="b1",
        )
        broker.put(keys.event(event.id), codec.encode(event))
        made.append(event)
    return made


def test_events_table_and_json(broker: Broker) -> None:
    made = seed(broker, 4)
    table = runner.invoke(app, ["events"])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert any("TIME" in line and "KIND" in line and "SUBJECT" in line for line in lines)
    order = [i for i in range(4) for line in lines if f"event {i}" in line]
    assert order == [0, 1, 2, 3]
    assert "2023-11-14T22:13:20Z" in table.stdout  # at_ms of event 0, in UTC

    as_json = json.loads(runner.invoke(app, ["events", "-o", "json", "--limit", "2"]).stdout)
    assert [e["id"] for e in as_json] == [made[2].id, made[3].id]
    since = json.loads(runner.invoke(app, ["events", "-o", "json", "--since", made[0].id]).stdout)
    assert [e["message"] for e in since] == ["event 1", "event 2", "event 3"]
    subject = json.loads(runner.invoke(app, ["events", "-o", "json", "--subject", "edge-1"]).stdout)
    assert [e["message"] for e in subject] == ["event 1", "event 3"]


def test_events_follow_prints_new_ones_once(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(broker, 2)
    polls = 0

    def sleep(_: float) -> None:
        nonlocal polls
        polls += 1
        if polls == 1:
            seed(broker, 2, start=2)  # two new events arrive while following
        elif polls == 3:
            raise KeyboardInterrupt  # Ctrl-C

    monkeypatch.setattr("broker.cli.events.time.sleep", sleep)
    result = runner.invoke(app, ["events", "--follow", "-o", "json"])
    assert result.exit_code == 0, result.output
    printed = [json.loads(line)["message"] for line in result.stdout.splitlines()]
    assert printed == ["event 0", "event 1", "event 2", "event 3"]


def test_events_follow_table_lines(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(broker, 1)

    def sleep(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("broker.cli.events.time.sleep", sleep)
    result = runner.invoke(app, ["events", "-f"])
    assert result.exit_code == 0
    assert result.stdout.strip() == "2023-11-14T22:13:20Z  site.up  edge-0  event 0"


def test_events_of_real_registrations(broker: Broker) -> None:
    assert runner.invoke(sites.app, ["register", "edge-9", "--region", "r"]).exit_code == 0
    found = json.loads(runner.invoke(app, ["events", "-o", "json"]).stdout)
    assert [(e["kind"], e["subject"]) for e in found] == [("site.registered", "edge-9")]


def test_bad_limit_is_a_usage_error(broker: Broker) -> None:
    assert runner.invoke(app, ["events", "--limit", "0"]).exit_code == 2


def test_no_leader(broker: Broker) -> None:
    result = runner.invoke(app, ["leader"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no leader elected")
    assert "HTTP 503" in result.stderr


def test_leader_table_and_json(broker: Broker) -> None:
    broker.put(keys.LEADER, b"broker-a")
    revision = broker.loop.run(broker.store.get(keys.LEADER))
    assert revision is not None
    as_json = json.loads(runner.invoke(app, ["leader", "-o", "json"]).stdout)
    assert as_json["leader"] == "broker-a" and as_json["fence"] == revision.create_revision
    table = runner.invoke(app, ["leader"])
    assert table.exit_code == 0
    assert "broker-a" in table.stdout and str(revision.create_revision) in table.stdout


def test_events_filter_by_site_kind_and_time(broker: Broker) -> None:
    made = seed(broker, 6)
    out = runner.invoke(app, ["events", "-o", "json", "--site", "edge-1"])
    assert [e["id"] for e in json.loads(out.stdout)] == [made[i].id for i in (1, 3, 5)]
    window = ["--since-ms", str(made[2].at_ms), "--until-ms", str(made[4].at_ms)]
    out = runner.invoke(app, ["events", "-o", "json", *window])
    assert [e["id"] for e in json.loads(out.stdout)] == [made[i].id for i in (2, 3, 4)]
    out = runner.invoke(app, ["events", "-o", "json", "--kind", "site.down"])
    assert json.loads(out.stdout) == []
