"""Site drivers by name: ``settings.driver`` picks its factory from ``FACTORIES``.

A new driver is a module implementing ``base.Driver`` and one line here (and its name in
``settings.AgentSettings.driver``, which a unit test checks against this table). A
factory imports its driver's module when called, so an agent of one kind never loads
another's libraries (openstacksdk is heavy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from siteagent import errors
from siteagent.drivers.base import Driver
from siteagent.settings import AgentSettings

Factory = Callable[[AgentSettings], Driver]


def _sim(settings: AgentSettings) -> Driver:
    from siteagent.drivers.sim import SimSite

    sim = settings.sim
    if sim.config_file:
        site = SimSite.from_file(sim.config_file)
    else:
        site = SimSite.generated(
            settings.site_id, hosts=sim.hosts, cells=sim.cells, seed=sim.seed
        )
    if sim.control_file:
        site.control(sim.control_file)
    return site


def _openstack(settings: AgentSettings) -> Driver:
    from siteagent.drivers.openstack import OpenStackDriver

    return OpenStackDriver.from_settings(settings)


FACTORIES: Mapping[str, Factory] = {
    "sim": _sim,
    "openstack": _openstack,
}


def make(settings: AgentSettings) -> Driver:
    """The driver ``settings.driver`` names, for ``settings.site_id``."""
    factory = FACTORIES.get(settings.driver)
    if factory is None:
        raise errors.SettingsError(
            [f"driver: unknown driver {settings.driver!r}; one of {', '.join(FACTORIES)}"]
        )
    return factory(settings)
