"""The driver registry (by name) and the openstack driver's kind registry agree with the
settings and with ``base.KINDS``: a name in one table and not the other fails here."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from siteagent import errors
from siteagent.drivers import base, registry
from siteagent.drivers.sim import SimSite
from siteagent.settings import AgentSettings


def test_every_driver_name_the_settings_accept_has_a_factory() -> None:
    accepted = typing.get_args(typing.get_type_hints(AgentSettings)["driver"])
    assert set(accepted) == set(registry.FACTORIES)


def test_the_sim_driver_is_made_by_name() -> None:
    driver = registry.make(AgentSettings(site_id="s1", driver="sim"))
    assert isinstance(driver, SimSite)


def test_an_unknown_driver_name_is_a_settings_error() -> None:
    bad = dataclasses.replace(AgentSettings(site_id="s1"), driver="vmware")  # type: ignore[arg-type]
    with pytest.raises(errors.SettingsError, match="'vmware'; one of sim, openstack"):
        registry.make(bad)


def test_the_openstack_driver_has_one_handler_per_kind_and_no_other() -> None:
    from siteagent.drivers.openstack import kinds

    assert set(kinds.HANDLERS) == set(base.KINDS)
    for kind, handler in kinds.HANDLERS.items():
        assert handler.kind == kind
    assert [k for k, h in kinds.HANDLERS.items() if h.long] == ["image"]


async def test_the_openstack_driver_refuses_an_unknown_kind_before_any_cloud_call() -> None:
    from siteagent.drivers.openstack import OpenStackDriver

    # no cloud is configured: reaching it would fail differently
    driver = OpenStackDriver("s1", "no-such-cloud")
    with pytest.raises(errors.InvalidSpec, match="unknown kind 'volume'"):
        await driver.delete("volume", "v1")
    assert await driver.observe("volume", "v1") is None
    await driver.close()
