"""The openstack driver: one handler per object kind over one shared cloud.

``driver.OpenStackDriver`` is the ``drivers.base.Driver``; ``kinds.HANDLERS`` is the
registry kind → handler (``flavor``, ``server_group``, ``keypair``, ``security_group``,
``network``, ``subnet``, ``port`` with its ``trunk``, ``server``, ``image``, ``quota``, one
module each); ``cloud.Cloud`` holds the connections and finds Meridian's objects by cloud
name and marker; ``inventory`` reads hosts and usage from Nova and Placement. Markers,
connecting and the one error boundary are ``drivers.openstack_support``, shared with the
Glance image store.

Credentials come only from the agent's own ``clouds.yaml`` / ``OS_*`` (the cloud named in
``settings.openstack.cloud``); nothing the driver returns carries one (invariant 6).
Objects are owned only when they carry the marker ``meridian:<site>/<kind>/<name>:gen=N``;
the marker's generation makes re-applying a no-op (invariant 4). Project-scoped objects
are created through a connection scoped to the spec's project (``-`` or empty: the
agent's own project), so they belong to it natively.
"""

from siteagent.drivers.openstack.driver import OpenStackDriver

__all__ = ["OpenStackDriver"]
