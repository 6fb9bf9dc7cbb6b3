"""The registry: which handler converges each object kind on an OpenStack site.

A new kind is one module with its handler and one line here (and its spec in
``drivers.specs``, its rank in ``drivers.base.KINDS``); a unit test checks that this table
and ``base.KINDS`` name the same kinds.
"""

from __future__ import annotations

from collections.abc import Mapping

from siteagent.drivers.openstack import (
    flavor,
    image,
    keypair,
    network,
    port,
    quota,
    security_group,
    server,
    server_group,
    subnet,
)
from siteagent.drivers.openstack.kind import Handler

HANDLERS: Mapping[str, Handler] = {
    handler.kind: handler
    for handler in (
        quota.HANDLER,
        keypair.HANDLER,
        security_group.HANDLER,
        image.HANDLER,
        flavor.HANDLER,
        server_group.HANDLER,
        network.HANDLER,
        subnet.HANDLER,
        port.HANDLER,
        server.HANDLER,
    )
}
