"""The cpu allocation ratio travels from the site to placement: a sim site's configured
ratio, sent through the wire, sizes the shared vCPUs the broker's snapshot offers; a host
whose site sent none (an older agent) gets Nova's default, 4.0."""

from __future__ import annotations

import dataclasses

from broker.gateway import convert
from broker.models import codec
from broker.models.inventory import Inventory
from broker.placement import claims
from broker.placement.snapshot import CPU_ALLOCATION_RATIO, Snapshot
from broker.store import keys
from siteagent import wire
from siteagent.drivers import sim

SITE_YAML = """
site: edge-1
cpu_allocation_ratio: 2.0
hosts:
  - name: cmp-a
    cells:
      - {id: 0, cpus: 8, pcpus: 4, memory_mb: 16384}
"""


async def sent(site: sim.SimSite) -> Inventory:
    """The site's inventory as the broker stores it, after the wire both ways."""
    msg = wire.inventory_to_wire(await site.inventory())
    return codec.decode(Inventory, codec.encode(convert.inventory_from_wire("edge-1", msg)))


def shared_free(inv: Inventory) -> int:
    snap = Snapshot()
    snap.apply(keys.inventory("edge-1"), codec.encode(inv), 1)
    return snap.sites["edge-1"].hosts[0].cells[0].vcpus_free


async def test_the_sites_own_ratio_sizes_shared_vcpus_at_the_broker() -> None:
    inv = await sent(sim.SimSite.from_yaml(SITE_YAML))
    assert inv.hosts[0].cpu_allocation_ratio == 2.0
    assert shared_free(inv) == (8 - 4) * 2


async def test_a_host_sent_without_a_ratio_gets_novas_default() -> None:
    inv = await sent(sim.SimSite.from_yaml(SITE_YAML))
    old = dataclasses.replace(
        inv, hosts=tuple(dataclasses.replace(h, cpu_allocation_ratio=0.0) for h in inv.hosts)
    )
    assert shared_free(old) == int((8 - 4) * CPU_ALLOCATION_RATIO)


async def test_a_stored_inventory_from_before_the_ratio_decodes_with_none() -> None:
    inv = await sent(sim.SimSite.from_yaml(SITE_YAML))
    raw = codec.encode(inv).replace(b',"cpu_allocation_ratio":2.0', b"")
    assert b"cpu_allocation_ratio" not in raw
    assert codec.decode(Inventory, raw).hosts[0].cpu_allocation_ratio == 0.0


async def test_held_shared_vcpus_count_at_the_hosts_ratio() -> None:
    inv = await sent(sim.SimSite.from_yaml(SITE_YAML))
    snap = Snapshot()
    snap.apply(keys.inventory("edge-1"), codec.encode(inv), 1)
    view = snap.sites["edge-1"]
    before = view.util
    view.hold(claims.Claim(member="v/m", host="cmp-a", cell=0, vcpus=4))
    assert view.util - before == 4 / 2.0 / 8
