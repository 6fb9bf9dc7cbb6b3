"""VNFs' stitched virtual links: the stitched networks the stitching controller builds for them.

A virtual link marked ``stitched`` in a VNF's descriptor becomes one ``l2-stretched``
network, named ``render.link_network(vnf, link)`` (the name the VNF's ports attach to),
over the sites where the VNF's members on that link are placed, carrying those members'
ports. It is written PENDING (fenced, only when absent) once the VNF has members; its ports
follow the members while they stay within its sites; it is marked deleted once the VNF is
gone (record deleted, or FAILED with nothing placed). The VNF is recorded in the
network's ``vnfs``, so the API refuses to delete the network while the VNF exists.

Invariant: a network a VNF owns outlives the VNF by at most one resync of the stitching
controller (``orphaned``), even when the VNF's deletion event was missed.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from broker import errors
from broker.election.fencing import fenced_txn
from broker.models import codec
from broker.models import vnf as model
from broker.models.network import NetworkRecord
from broker.placement import render
from broker.stitching import layout
from broker.store import keys
from broker.store.protocol import Compare, Op, Put, Store, Target

log = logging.getLogger(__name__)


def has_stitched_link(raw_descriptor: dict[str, object]) -> bool:
    """Whether a stored descriptor marks any virtual link stitched (without parsing it)."""
    links = raw_descriptor.get("virtual_links") or []
    return isinstance(links, list) and any(
        isinstance(v, dict) and v.get("stitched") for v in links
    )


def wanted(record: model.VnfRecord) -> dict[str, dict[str, tuple[str, ...]]]:
    """Per stitched network of the VNF: per member site, the ports attached there."""
    desc = model.parse(record.descriptor)
    return render.stitched_ports(record.id, desc, ((m.name, m.vdu, m.site) for m in record.members))


async def sync(store: Store, fence: int, vnf_id: str, raw: bytes) -> list[str]:
    """Bring the VNF's stitched networks in line with its record (``b""``: deleted);
    the networks written, to be stepped."""
    record = codec.decode(model.VnfRecord, raw) if raw else None
    if record is not None and not has_stitched_link(record.descriptor):
        return []
    gone = record is None or (record.state is model.VnfState.FAILED and not record.members)
    if gone:
        return await _release(store, fence, vnf_id)
    assert record is not None
    if not record.members or record.deleted:
        return []
    written = []
    for net, ports in wanted(record).items():
        if await _ensure(store, fence, record, net, ports):
            written.append(net)
    return written


async def _ensure(
    store: Store, fence: int, record: model.VnfRecord, net: str, ports: dict[str, tuple[str, ...]]
) -> bool:
    key = keys.network(net)
    kv = await store.get(key)
    now = int(time.time() * 1000)
    if kv is None:
        rec = NetworkRecord(
            net,
            record.tenant,
            layout.L2,
            tuple(ports),
            vnfs=(record.id,),
            ports=ports,
            created_ms=now,
            updated_ms=now,
        )
        guard = Compare(key, Target.CREATE, Op.EQUAL, 0)
        log.info("vnf %s: stitched network %s over %s", record.id, net, ", ".join(ports))
    else:
        rec = NetworkRecord.decode(kv.value)
        if rec.deleted or record.id not in rec.vnfs or rec.ports == ports:
            return False
        if not set(ports) <= set(rec.sites):
            log.warning(
                "vnf %s: members moved to %s, outside stitched network %s's sites %s",
                record.id,
                ", ".join(sorted(set(ports) - set(rec.sites))),
                net,
                ", ".join(rec.sites),
            )
            ports = {s: p for s, p in ports.items() if s in rec.sites}
            if rec.ports == ports:
                return False
        rec = dataclasses.replace(rec, ports=ports, updated_ms=now)
        guard = Compare(key, Target.MOD, Op.EQUAL, kv.mod_revision)
    try:
        await fenced_txn(store, fence, [Put(key, rec.encode())], [guard])
    except errors.Conflict:
        return False  # changed meanwhile: the change's own event brings us back
    return True


async def _release(store: Store, fence: int, vnf_id: str) -> list[str]:
    """Mark deleted every network the VNF owns."""
    kvs, _ = await store.get_prefix(keys.NETWORKS)
    out = []
    for kv in kvs:
        rec = NetworkRecord.decode(kv.value)
        if vnf_id not in rec.vnfs or rec.deleted:
            continue
        guard = Compare(kv.key, Target.MOD, Op.EQUAL, kv.mod_revision)
        marked = dataclasses.replace(rec, deleted=True, updated_ms=int(time.time() * 1000))
        try:
            await fenced_txn(store, fence, [Put(kv.key, marked.encode())], [guard])
        except errors.Conflict:
            continue
        log.info("vnf %s gone: its stitched network %s goes too", vnf_id, rec.id)
        out.append(rec.id)
    return out


async def users(store: Store, rec: NetworkRecord) -> list[str]:
    """The VNFs in ``rec.vnfs`` that still exist."""
    return [v for v in rec.vnfs if await store.get(keys.vnf(v)) is not None]


async def orphaned(store: Store, fence: int, rec: NetworkRecord) -> bool:
    """Mark ``rec`` deleted if every VNF it was built for is gone; whether it did."""
    if not rec.vnfs or rec.deleted or await users(store, rec):
        return False
    for vnf_id in rec.vnfs:
        await _release(store, fence, vnf_id)
    return True
