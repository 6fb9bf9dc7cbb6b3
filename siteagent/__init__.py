"""Meridian site agent: one per site, it owns that site's OpenStack and hardware.

The agent dials out to a broker replica over mutual TLS (``session``), reports its
hardware inventory (``hardware``) and per-project usage, receives the site's desired
objects with their generations, and converges the local cloud to them (``reconciler``
through a ``drivers`` implementation: ``openstack`` for a real cloud, ``sim`` for a
simulated one). It reports per-object status and the generation it has observed.

Invariants kept here: site state is declarative and generation-numbered, so redelivery,
reconnect and replay are harmless (invariant 4); the site's OpenStack credentials live
only in the agent's configuration and never travel to the broker (invariant 6).
"""
