"""The sim site for failover (issue 10): the planned host, roles, failed hosts, lost servers,
the control file, and the reconciler's re-observation that reports them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from siteagent import errors, models, reconciler
from siteagent.drivers import sim, simcontrol
from tests.unit.siteagent.drivers.test_sim import SITE_YAML, obj, seeded, server


@pytest.fixture
async def site() -> sim.SimSite:
    return await seeded(sim.SimSite.from_yaml(SITE_YAML))


def member(host: str | None = None, role: str | None = None, **more: Any) -> dict[str, Any]:
    spec = server("m", "shared-2", **more)
    if host is not None:
        spec["hypervisor_hostname"] = host
    if role is not None:
        spec["metadata"] = {"meridian:role": role}
    return spec


async def test_the_planned_host_is_honoured(site: sim.SimSite) -> None:
    # the first fit would be cmp-a: the broker planned cmp-b
    status = await site.apply(obj("server", "m", member("cmp-b")))
    assert status.outputs["host"] == "cmp-b"
    moved = await site.apply(obj("server", "m", member("cmp-a"), 2))
    assert moved.outputs["host"] == "cmp-a", "a new planned host moves the server"
    inv = await site.inventory()
    used = {h.name: sum(c.vcpus_used for c in h.cells) for h in inv.hosts}
    assert used == {"cmp-a": 2, "cmp-b": 0}, "the old host's claim was given back"


async def test_a_planned_host_that_cannot_take_it_is_a_permanent_error(
    site: sim.SimSite,
) -> None:
    with pytest.raises(errors.DriverError) as caught:
        await site.apply(obj("server", "m", member("cmp-zz")))
    assert not caught.value.temporary
    assert "no host fits on the planned host cmp-zz" in str(caught.value)
    assert await site.observe("server", "m") is None


async def test_a_planned_host_that_is_down_is_a_permanent_error(site: sim.SimSite) -> None:
    site.fail_host("cmp-b")
    with pytest.raises(errors.DriverError, match="planned host cmp-b is down") as caught:
        await site.apply(obj("server", "m", member("cmp-b")))
    assert not caught.value.temporary
    assert await site.observe("server", "m") is None
    site.fail_host("cmp-b", failed=False)
    assert (await site.apply(obj("server", "m", member("cmp-b")))).outputs["host"] == "cmp-b"


async def test_role_is_applied_and_reported_without_moving(site: sim.SimSite) -> None:
    first = await site.apply(obj("server", "m", member("cmp-b", "standby")))
    assert first.outputs["role"] == "standby"
    promoted = await site.apply(obj("server", "m", member("cmp-b", "active"), 2))
    assert promoted.outputs["role"] == "active"
    assert promoted.outputs["host"] == first.outputs["host"]
    assert promoted.outputs["numa_cell"] == first.outputs["numa_cell"]
    with pytest.raises(errors.InvalidSpec, match="meridian:role"):
        await site.apply(obj("server", "m", member("cmp-b", "leader"), 3))


async def test_a_failed_host_fails_its_servers_and_is_marked_in_inventory(
    site: sim.SimSite,
) -> None:
    await site.apply(obj("server", "m", member("cmp-b")))
    site.fail_host("cmp-b")
    seen = await site.observe("server", "m")
    assert seen is not None and seen.state is models.ObjectState.FAILED
    assert seen.message == "host cmp-b is down"
    inv = await site.inventory()
    assert {h.name: h.traits.get(sim.HOST_STATE) for h in inv.hosts} == {
        "cmp-a": None,
        "cmp-b": "down",
    }
    site.fail_host("cmp-b", failed=False)
    back = await site.observe("server", "m")
    assert back is not None and back.state is models.ObjectState.READY


async def test_a_lost_server_is_gone_and_its_claim_given_back(site: sim.SimSite) -> None:
    await site.apply(obj("server", "m", member("cmp-b")))
    assert site.lose("server", "m")
    assert await site.observe("server", "m") is None
    inv = await site.inventory()
    assert sum(c.vcpus_used for h in inv.hosts for c in h.cells) == 0
    assert not site.lose("server", "m")


async def test_the_control_file_drives_faults(
    site: sim.SimSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simcontrol, "CHECK_S", 0.0)
    control = tmp_path / "control.yaml"
    site.control(control)
    await site.apply(obj("server", "m", member("cmp-b")))
    await site.apply(obj("server", "n", member("cmp-a")))
    control.write_text("failed_hosts: [cmp-b]\nlost: [server/n]\n")
    seen = await site.observe("server", "m")
    assert seen is not None and seen.state is models.ObjectState.FAILED
    assert await site.observe("server", "n") is None
    control.write_text("not: [a, mapping, of, faults]\nlost: 7\n")
    seen = await site.observe("server", "m")
    assert seen is not None and seen.state is models.ObjectState.FAILED, "bad file: no change"
    control.unlink()
    seen = await site.observe("server", "m")
    assert seen is not None and seen.state is models.ObjectState.READY


@pytest.mark.parametrize(
    "text", ["[1, 2]", "lost: [no-slash]", "failed_hosts: {a: b}", "{{{", "lost: [server/]"]
)
def test_bad_control_files_are_refused(text: str) -> None:
    assert simcontrol.parse(text) is None


async def test_reobservation_reports_lost_and_failed_host_servers(site: sim.SimSite) -> None:
    seen: list[models.ObjectStatus] = []
    rec = reconciler.Reconciler(site, on_status=seen.append)
    worker = asyncio.create_task(rec.run())
    try:
        await rec.submit(obj("server", "m", member("cmp-b", "active")))
        await rec.submit(obj("server", "n", member("cmp-a", "standby")))
        await rec.submit(obj("network", "lost-net", {"project": "p1"}))
        await rec.wait_idle()
        assert await rec.reobserve_once() == 2, "servers only"
        site.fail_host("cmp-b")
        site.lose("server", "n")
        await rec.reobserve_once()
        m, n = rec.status("server", "m"), rec.status("server", "n")
        assert m is not None and m.state is models.ObjectState.FAILED
        assert m.message == "host cmp-b is down" and m.observed_generation == 1
        assert n is not None and n.state is models.ObjectState.FAILED and not n.temporary
        assert n.message == reconciler.GONE and n.outputs["role"] == "standby"
        assert n.outputs[reconciler.GONE_OUTPUT] == "true"  # gone, not broken (m)
        assert reconciler.GONE_OUTPUT not in m.outputs
        site.fail_host("cmp-b", failed=False)
        await rec.reobserve_once()
        m = rec.status("server", "m")
        assert m is not None and m.state is models.ObjectState.READY
        assert m.outputs["role"] == "active"
        reported = len(seen)
        await rec.reobserve_once()
        assert len(seen) == reported, "nothing changed: nothing reported"
        # a new generation re-creates the lost server (the broker's call)
        await rec.submit(obj("server", "n", member("cmp-a", "standby"), 2))
        await rec.wait_idle()
        n = rec.status("server", "n")
        assert n is not None and n.state is models.ObjectState.READY
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)


async def next_status(rec: reconciler.Reconciler, within: float) -> models.ObjectStatus | None:
    stream = rec.statuses()
    try:
        return await asyncio.wait_for(anext(stream), within)
    except TimeoutError:
        return None
    finally:
        await stream.aclose()


async def test_a_reconnect_never_replays_a_stale_active_before_the_demotion(
    site: sim.SimSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = reconciler.Reconciler(site)
    worker = asyncio.create_task(rec.run())
    try:
        await rec.submit(obj("server", "m", member("cmp-b", "active")))
        await rec.submit(obj("server", "n", member("cmp-a", "standby")))
        await rec.wait_idle()
        while await next_status(rec, 0.05) is not None:
            pass  # what the old stream carried
        rec.replay()  # reconnected: the standby is replayed, the active is held
        first = await next_status(rec, 0.2)
        assert first is not None and first.name == "n"
        assert await next_status(rec, 0.2) is None
        # the broker's desired state on the new stream demotes it: only that goes out
        await rec.submit(obj("server", "m", member("cmp-b", "standby"), 2))
        await rec.wait_idle()
        demoted = await next_status(rec, 1.0)
        assert demoted is not None and demoted.name == "m"
        assert (demoted.observed_generation, demoted.outputs["role"]) == (2, "standby")
        # not demoted this time: after the hold it is reported as it is
        await rec.submit(obj("server", "m", member("cmp-b", "active"), 3))
        await rec.wait_idle()
        while await next_status(rec, 0.05) is not None:
            pass
        monkeypatch.setattr(reconciler, "HOLD_S", 0.1)
        rec.replay()
        replayed = [await next_status(rec, 1.0), await next_status(rec, 1.0)]
        assert [(s.name, s.outputs["role"]) for s in replayed if s is not None] == [
            ("n", "standby"),
            ("m", "active"),
        ]
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
