"""Controllers: the leader's decisions, one concern per module.

They run only while their replica leads (``broker.election``), and every write they make
is fenced with the leader key's revision (invariant 3), so a deposed leader's decision
never lands. Each registers itself in ``registry`` (name, factory, leader only or every
replica); ``running.py`` starts what is registered.
"""

# each module registers its controller (``registry``); importing them completes the list
from broker.controllers import (  # noqa: F401
    drills,
    failover,
    images,
    quotasync,
    retention,
    rtofeed,
    sitehealth,
    stitching,
    survivability,
    vnfs,
)
