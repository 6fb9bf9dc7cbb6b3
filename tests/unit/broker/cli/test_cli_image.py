"""``meridian image ...`` against the real API app: list, show, replicate (with --watch
following the replicas to their end), repair, and failures."""

from __future__ import annotations

import hashlib
import json

from typer.testing import CliRunner

from broker.cli import image
from broker.models import codec
from broker.models.site import SiteSpec
from broker.store import keys
from replication import catalog
from replication.catalog import Entry, Image, ImageId, Replica, SiteId
from tests.unit.broker.cli.clitest_support import Broker

runner = CliRunner()
SHA = hashlib.sha256(b"img").hexdigest()


def setup(broker: Broker) -> None:
    for site in ("src", "a", "b"):
        broker.put(keys.site(site), codec.encode(SiteSpec(id=site, region="eu")))
    img = Image(ImageId("img"), "cirros", 3, SHA, SiteId("src"))
    broker.put(keys.image("img"), Entry(img).encode())
    replica(broker, "src", "active")


def replica(broker: Broker, site: str, state: str, reason: str = "") -> None:
    r = Replica(ImageId("img"), SiteId(site)).queue()
    if state == "active":
        r = r.start(source="src").verify().activate(3)
    elif state == "failed":
        r = r.fail(reason)
    broker.put(keys.image_replica("img", site), catalog.encode_replica(r))


def test_list_and_show(broker: Broker) -> None:
    setup(broker)
    listed = runner.invoke(image.app, ["list"])
    assert listed.exit_code == 0, listed.output
    assert "img" in listed.stdout and "1 active" in listed.stdout
    shown = runner.invoke(image.app, ["show", "img", "-o", "json"])
    assert shown.exit_code == 0, shown.output
    assert [r["site"] for r in json.loads(shown.stdout)["replicas"]] == ["src"]
    table = runner.invoke(image.app, ["show", "img"])
    assert "sha256 " + SHA in table.stdout.replace("\n", "")
    missing = runner.invoke(image.app, ["show", "nope"])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_replicate_watch_ends_when_every_target_settles(broker: Broker) -> None:
    setup(broker)
    replica(broker, "a", "active")
    replica(broker, "b", "failed", "CacheFull: needs 3 bytes, 0 free")
    result = runner.invoke(image.app, ["replicate", "img", "--to", "a,b", "--watch"])
    assert result.exit_code == 1, result.output
    assert "b failed" in result.output and "CacheFull" in result.output
    ok = runner.invoke(image.app, ["replicate", "img", "--to", "a", "--watch", "-o", "json"])
    assert ok.exit_code == 0, ok.output
    assert [r["state"] for r in json.loads(ok.stdout)] == ["active"]


def test_replicate_by_selector_and_bad_targets(broker: Broker) -> None:
    setup(broker)
    result = runner.invoke(image.app, ["replicate", "img", "--to", "region=eu"])
    assert result.exit_code == 0, result.output
    assert "a, b, src" in result.stdout
    bad = runner.invoke(image.app, ["replicate", "img", "--to", "mars"])
    assert bad.exit_code == 1 and "to[0]" in bad.output
    empty = runner.invoke(image.app, ["replicate", "img", "--to", ","])
    assert empty.exit_code == 1 and "--to" in empty.output


def test_repair_retries_failed_replicas(broker: Broker) -> None:
    setup(broker)
    nothing = runner.invoke(image.app, ["repair", "img"])
    assert nothing.exit_code == 0 and "no failed replica" in nothing.stdout
    replica(broker, "b", "failed", "SinkRejected: no")
    result = runner.invoke(image.app, ["repair", "img"])
    assert result.exit_code == 0, result.output
    assert "retrying img at b" in result.stdout
    kv = broker.loop.run(broker.store.get(keys.image("img")))
    assert kv is not None
    entry = Entry.decode(kv.value)
    assert entry.targets == ("b",) and entry.generation == 2
