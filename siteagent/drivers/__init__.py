"""How the agent acts on its cloud: ``base.Driver`` is the seam.

``registry`` picks a driver by name. ``openstack`` (a package: one handler per object kind
over a shared cloud) drives a real cloud through openstacksdk; ``sim`` simulates one in
memory (hosts, NUMA cells, pCPUs, huge pages, SR-IOV VFs) for tests and for running many
sites in one process. ``specs`` validates the spec of each object kind once for every
driver.
"""
