"""The stitching controller (leader only): allocate, push and follow stitched networks.

For every site it keeps a ``gateway_endpoint`` desired object, whose status is the site's
gateway endpoint as its agent reports it (underlay address, MTU). For every network the
API accepted (``networks/<id>``, PENDING) it checks the member sites' endpoints and the
MTU, allocates block, VNI and route target through the fenced ledger, and writes the
record (PROVISIONING, with allocation and per-site segments) and every member's
``network_stitch`` object in one fenced transaction. A refusal (unknown endpoint, MTU,
overlap, exhaustion, a block too small) makes the record FAILED with the reason and the
HTTP status, and holds nothing. It follows the members' statuses (READY, DEGRADED),
re-renders when an endpoint changes (the next generation: tunnels rebuilt), writes a
``network_verify`` round when the API asks, and on delete tombstones the members' objects,
waits for the sites, then releases the allocation and drops the record. A VNF's
stitched virtual links become networks here too (``vnflinks``): written when the VNF is
placed, carrying its ports, waiting PENDING for a member's endpoint rather than refused,
and deleted when the VNF is gone.

Invariants: every write is fenced; a network's allocation and its desired objects appear
together (the allocation alone, after a crash between the two transactions, is found
again by the ledger's idempotent allocate); nothing is released before its tunnels are
gone from every reachable member.
"""

from __future__ import annotations

import asyncio
import json
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from broker.controllers import registry
from broker import errors
from broker.election.fencing import fenced_txn
from broker.models import objects
from broker.models.network import NetworkRecord, NetworkState
from broker.settings import StitchingSettings
from broker.stitching import layout, render
from broker.stitching.ledger import Allocation, Ledger, Request
from broker.controllers import keyed, vnflinks
from broker.store import follow, keys
from broker.store.protocol import Compare, Delete, Get, Op, Put, Store, Target, TxnOp

log = logging.getLogger(__name__)

ENDPOINT = "gateway_endpoint"
STITCH = "network_stitch"
VERIFY = "network_verify"
ENDPOINT_NAME = "gateway"
RESYNC_S = 5.0


def now_ms() -> int:
    return int(time.time() * 1000)


def endpoint_of(status: objects.Status | None) -> render.GatewayEndpoint | None:
    """The endpoint a READY ``gateway_endpoint`` status reports, else None."""
    if status is None or status.settled_state() is not objects.State.READY:
        return None
    try:
        return render.GatewayEndpoint("", status.outputs["address"], int(status.outputs["mtu"]))
    except (KeyError, ValueError):
        return None


class StitchingController:
    def __init__(self, store: Store, fence: int, settings: StitchingSettings) -> None:
        self.store, self.fence, self.settings = store, fence, settings
        self.ledger = Ledger(store, fence, settings)
        self._steps = keyed.Steps(self.step, "network")
        self._members: dict[str, set[str]] = {}
        """site → networks it is a member of (to route endpoint changes)."""
        self._owners: set[str] = set()
        """VNFs a network was built for (their deletion deletes it)."""

    async def run(self) -> None:
        await self.ledger.load()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._follow(keys.SITES, self._on_site))
            tg.create_task(self._follow(keys.NETWORKS, self._on_network))
            tg.create_task(self._follow(keys.OBSERVED, self._on_observed))
            tg.create_task(self._follow(keys.VNFS, self._on_vnf))
            tg.create_task(self._resync())

    async def _follow(self, prefix: str, handle: Callable[[str, bytes], Awaitable[None]]) -> None:
        async for key, value in follow.changes(self.store, prefix):
            await handle(key, value)

    async def _on_site(self, key: str, value: bytes) -> None:
        if not value:
            return
        site = keys.name_in(keys.SITES, key)
        desired = keys.desired(site, ENDPOINT, ENDPOINT_NAME)
        absent = Compare(desired, Target.CREATE, Op.EQUAL, 0)
        try:
            await fenced_txn(
                self.store, self.fence, [Put(desired, objects.first({}).encode())], [absent]
            )
        except errors.Conflict:
            pass  # it exists already

    async def _on_network(self, key: str, value: bytes) -> None:
        if value:
            self.kick(keys.name_in(keys.NETWORKS, key))

    async def _on_vnf(self, key: str, value: bytes) -> None:
        """A VNF with a stitched link (placed, moved or gone) changes its networks."""
        vnf_id = keys.name_in(keys.VNFS, key)
        if value and b'"stitched":true' not in value:
            return
        if not value and vnf_id not in self._owners:
            return
        try:
            nets = await vnflinks.sync(self.store, self.fence, vnf_id, value)
        except errors.InvalidInput as exc:
            log.warning("vnf %s: its stitched links are not readable: %s", vnf_id, exc)
            return
        for net in nets:
            self.kick(net)

    async def _on_observed(self, key: str, value: bytes) -> None:
        site, kind, name = keys.split_object(key)
        if kind == ENDPOINT:
            for net in self._members.get(site, set()):
                self.kick(net)
        elif kind in (STITCH, VERIFY) and name:
            self.kick(name)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_S)
            self._steps.check()
            try:
                kvs, _ = await self.store.get_prefix(keys.NETWORKS)
            except errors.StoreUnavailable:
                continue
            for kv in kvs:
                rec = NetworkRecord.decode(kv.value)
                orphan = await self._orphaned(rec)
                if orphan or rec.deleted or rec.state is not NetworkState.READY:
                    self.kick(rec.id)

    async def _orphaned(self, rec: NetworkRecord) -> bool:
        try:
            return await vnflinks.orphaned(self.store, self.fence, rec)
        except (errors.StoreUnavailable, errors.Conflict) as exc:
            log.warning("network %s: orphan check skipped (%s)", rec.id, exc)
            return False

    def kick(self, net: str) -> None:
        self._steps.kick(net)

    async def drain(self) -> None:
        """Wait until no network is being worked on (for tests)."""
        await self._steps.drain()

    # -- one step of one network -------------------------------------------------------------

    async def step(self, net: str) -> None:
        kv = await self.store.get(keys.network(net))
        if kv is None:
            return
        rec = NetworkRecord.decode(kv.value)
        for site in rec.sites:
            self._members.setdefault(site, set()).add(net)
        self._owners.update(rec.vnfs)
        guard = Compare(kv.key, Target.MOD, Op.EQUAL, kv.mod_revision)
        if rec.deleted:
            await self._teardown(rec, guard)
        elif rec.state is NetworkState.PENDING:
            await self._create(rec, guard)
        elif rec.state is not NetworkState.FAILED:
            await self._follow_members(rec, guard)

    async def _statuses(self, kind: str, name: str, sites: tuple[str, ...]) -> list[Any]:
        result = await self.store.txn([], [Get(keys.observed(s, kind, name)) for s in sites])
        return [objects.Status.decode(r[0].value) if r else None for r in result.responses]

    async def endpoints(self, sites: tuple[str, ...]) -> dict[str, render.GatewayEndpoint]:
        """Every member's reported endpoint; ``InvalidInput`` naming a site without one."""
        found = {}
        statuses = await self._statuses(ENDPOINT, ENDPOINT_NAME, sites)
        for site, status in zip(sites, statuses, strict=True):
            ep = endpoint_of(status)
            if ep is None:
                said = (
                    f" (its agent reports: {status.message})" if status and status.message else ""
                )
                raise errors.InvalidInput("sites", f"site {site} has no gateway endpoint{said}")
            found[site] = dataclasses.replace(ep, site=site)
        return found

    async def _create(self, rec: NetworkRecord, guard: Compare) -> None:
        try:
            eps = await self.endpoints(rec.sites)
            mtu = layout.inner_mtu([e.mtu for e in eps.values()], rec.mtu or None)
            region = await self._region(rec.sites[0])
            alloc = await self.ledger.allocate(Request(rec.id, rec.tenant, region, rec.cidr))
        except errors.AllocationRefused as exc:
            await self._refuse(rec, guard, 409, str(exc))
            return
        except errors.InvalidInput as exc:
            if rec.vnfs and exc.field == "sites":  # a VNF's network waits for its sites
                await self._wait(rec, guard, f"waiting: {exc.problem}")
                return
            await self._refuse(rec, guard, 422, f"{exc.field}: {exc.problem}")
            return
        try:
            docs = self._render(rec, alloc, mtu, eps)
        except errors.InvalidInput as exc:  # the block cannot hold its sites: give it back
            await self.ledger.release(rec.id)
            await self._refuse(rec, guard, 422, f"{exc.field}: {exc.problem}")
            return
        segments = tuple(dict(d["segment"]) for d in docs.values())  # type: ignore[call-overload]
        done = dataclasses.replace(
            rec,
            state=NetworkState.PROVISIONING,
            allocation=alloc.as_json(),
            effective_mtu=mtu,
            segments=segments,
            updated_ms=now_ms(),
        )
        ops: list[TxnOp] = [Put(keys.network(rec.id), done.encode())]
        ops += [
            Put(keys.desired(s, STITCH, rec.id), objects.first(d).encode()) for s, d in docs.items()
        ]
        await fenced_txn(self.store, self.fence, ops, [guard])
        log.info(
            "network %s: %s vni %d over %s", rec.id, alloc.cidr, alloc.vni, ", ".join(rec.sites)
        )

    async def _region(self, site: str) -> str:
        kv = await self.store.get(keys.site(site))
        if kv is None:
            raise errors.InvalidInput("sites", f"site {site} is not registered")
        region = json.loads(kv.value).get("region", "")
        return str(region)

    def _render(
        self,
        rec: NetworkRecord,
        alloc: Allocation,
        mtu: int,
        eps: dict[str, render.GatewayEndpoint],
    ) -> dict[str, dict[str, object]]:
        return render.stitch_objects(
            rec.id,
            rec.type,
            alloc.cidr,
            alloc.vni,
            mtu,
            list(rec.sites),
            eps,
            self.settings.max_mesh,
            project=rec.tenant,
            ports=rec.ports,
            route_target=alloc.rt,
        )

    async def _wait(self, rec: NetworkRecord, guard: Compare, reason: str) -> None:
        """Stay PENDING, saying why (an endpoint change or the resync tries again)."""
        if rec.reason != reason:
            upd = dataclasses.replace(rec, reason=reason, updated_ms=now_ms())
            ops: list[TxnOp] = [Put(keys.network(rec.id), upd.encode())]
            await fenced_txn(self.store, self.fence, ops, [guard])

    async def _refuse(self, rec: NetworkRecord, guard: Compare, status: int, reason: str) -> None:
        failed = dataclasses.replace(
            rec, state=NetworkState.FAILED, reason=reason, status=status, updated_ms=now_ms()
        )
        await fenced_txn(
            self.store, self.fence, [Put(keys.network(rec.id), failed.encode())], [guard]
        )
        log.info("network %s refused: %s", rec.id, reason)

    async def _follow_members(self, rec: NetworkRecord, guard: Compare) -> None:
        ops = await self._rerender(rec)
        ops += await self._verify_round(rec)
        statuses = await self._statuses(STITCH, rec.id, rec.sites)
        states = [s.settled_state() if s else objects.State.PENDING for s in statuses]
        failed = [
            f"{site}: {s.message}"
            for site, s, st in zip(rec.sites, statuses, states, strict=True)
            if st is objects.State.FAILED
        ]
        state, reason = rec.state, rec.reason
        if failed:
            state, reason = NetworkState.DEGRADED, "; ".join(failed)
        elif all(st is objects.State.READY for st in states) and not ops:
            state, reason = NetworkState.READY, ""
        if ops or (state, reason) != (rec.state, rec.reason):
            upd = dataclasses.replace(rec, state=state, reason=reason, updated_ms=now_ms())
            await fenced_txn(
                self.store, self.fence, [Put(keys.network(rec.id), upd.encode()), *ops], [guard]
            )

    async def _rerender(self, rec: NetworkRecord) -> list[TxnOp]:
        """Next generations for members whose spec changed (an endpoint moved or came back)."""
        try:
            eps = await self.endpoints(rec.sites)
        except errors.InvalidInput:
            return []  # a member's gateway is down: keep its peers' tunnels as they are
        alloc = Allocation.from_json(json.dumps(rec.allocation).encode())
        docs = self._render(rec, alloc, rec.effective_mtu, eps)
        ops: list[TxnOp] = []
        for site, doc in docs.items():
            key = keys.desired(site, STITCH, rec.id)
            kv = await self.store.get(key)
            current = objects.Desired.decode(kv.value) if kv is not None else None
            if current is None or dict(current.spec) != doc:
                nxt = current.revise(doc) if current is not None else objects.first(doc)
                ops.append(Put(key, nxt.encode()))
        return ops

    async def _verify_round(self, rec: NetworkRecord) -> list[TxnOp]:
        """The members' ``network_verify`` objects for the API's latest verify request."""
        if not rec.verify_nonce:
            return []
        ops: list[TxnOp] = []
        addresses = {str(s["site"]): str(s["address"]).split("/")[0] for s in rec.segments}
        for site in rec.sites:
            key = keys.desired(site, VERIFY, rec.id)
            kv = await self.store.get(key)
            current = objects.Desired.decode(kv.value) if kv is not None else None
            if current is not None and current.spec.get("nonce") == rec.verify_nonce:
                continue
            spec = {
                "network": rec.id,
                "nonce": rec.verify_nonce,
                "targets": [[p, addresses[p]] for p in rec.sites if p != site],
            }
            nxt = current.revise(spec) if current is not None else objects.first(spec)
            ops.append(Put(key, nxt.encode()))
        return ops

    async def _teardown(self, rec: NetworkRecord, guard: Compare) -> None:
        if rec.state is not NetworkState.DELETING:
            ops: list[TxnOp] = [
                Put(
                    keys.network(rec.id),
                    dataclasses.replace(rec, state=NetworkState.DELETING).encode(),
                )
            ]
            for site in rec.sites:
                for kind in (STITCH, VERIFY):
                    key = keys.desired(site, kind, rec.id)
                    kv = await self.store.get(key)
                    if kv is not None:
                        ops.append(Put(key, objects.Desired.decode(kv.value).tombstone().encode()))
            await fenced_txn(self.store, self.fence, ops, [guard])
            return
        statuses = await self._statuses(STITCH, rec.id, rec.sites)
        if any(s is not None and s.state is not objects.State.DELETED for s in statuses):
            return  # agents are still tearing down; their statuses bring us back
        await self.ledger.release(rec.id)
        gone: list[TxnOp] = [Delete(keys.network(rec.id))]
        for site in rec.sites:
            gone += [Delete(keys.desired(site, kind, rec.id)) for kind in (STITCH, VERIFY)]
        await fenced_txn(self.store, self.fence, gone, [guard])
        for site in rec.sites:
            self._members.get(site, set()).discard(rec.id)
        self._owners.difference_update(rec.vnfs)
        log.info("network %s deleted", rec.id)


@registry.controller("stitching")
def _start(ctx: registry.Context) -> StitchingController:
    return StitchingController(ctx.store, ctx.fence, ctx.settings.stitching)
