"""Host health from Nova (issue 10): a host whose nova-compute service is down carries
``meridian:host_state=down`` in the inventory, and a server on it is FAILED."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from siteagent import models
from siteagent.drivers import base
from siteagent.drivers.openstack import inventory, server
from siteagent.drivers.openstack.placement import Hypervisor
from tests.unit.siteagent.drivers.test_openstack_inventory import rp, tree


@pytest.mark.parametrize(("state", "down"), [("up", False), ("down", True)])
def test_a_host_whose_nova_compute_is_down_is_down(state: str, down: bool) -> None:
    host = inventory.host(tree(rp("r", "h", VCPU=(8, 0))), Hypervisor(state, "enabled"))
    assert host is not None
    assert (host.traits.get(base.HOST_STATE) == "down") is down
    assert host.traits["hypervisor_state"] == state


def nova_server(status: str, host_status: str | None) -> SimpleNamespace:
    return SimpleNamespace(
        status=status, host_status=host_status, compute_host="site1-compute1", fault=None
    )


@pytest.mark.parametrize(
    ("status", "host_status", "state"),
    [
        ("ACTIVE", "UP", models.ObjectState.READY),
        ("ACTIVE", None, models.ObjectState.READY),  # not shown (policy): nothing to say
        ("ACTIVE", "DOWN", models.ObjectState.FAILED),
        ("ACTIVE", "UNKNOWN", models.ObjectState.FAILED),
        ("ACTIVE", "MAINTENANCE", models.ObjectState.READY),
        ("BUILD", "UP", models.ObjectState.PENDING),
    ],
)
def test_a_server_on_a_lost_host_is_failed(
    status: str, host_status: str | None, state: models.ObjectState
) -> None:
    found, message = server.HANDLER.state(nova_server(status, host_status))
    assert found is state
    if state is models.ObjectState.FAILED:
        assert message == f"compute host site1-compute1 is {host_status}"
