"""A local federation on one machine: etcd, broker replicas and agents as processes.

Agents drive simulated sites (``sim``) or, with ``meridian dev up --openstack``, the real
OpenStack sites of ``deploy/minicloud`` (``minicloud.py``).

Used by ``meridian dev up`` and by the end-to-end tests and benchmarks, so what a
developer runs by hand is exactly what the tests run. Agents are started as separate
programs (``python -m siteagent``), never imported: the broker does not import the agent.
"""
