"""The global allocation ledger of stitched networks, in etcd, written only fenced.

Layout under ``ipam/`` (invariant 13: nothing else reads or writes it):

- ``ipam/head``: bumped by every allocation and release; its mod revision is the
  compare that serialises writers (a second allocator, or a stale cache, fails it);
- ``ipam/networks/<id>``: one network's whole allocation (block, VNI, route target,
  VLAN ids) — the truth the pools are rebuilt from;
- ``ipam/segments/<owner>``: the provider VLAN ids a VNF's virtual links hold, keyed
  ``<link>@<site>/<physnet>`` (the same ``vlan/<site>/<physnet>`` pools as networks');
- ``ipam/held/<pool>/<value>``: one key per value held, created with a
  ``create_revision == 0`` compare, so etcd itself refuses a value handed out twice.

Every write is one fenced transaction (invariant 3): a deposed leader's allocation fails
(``FencedOut``) and leaves nothing. A network's allocation lands whole or not at all, and
allocating an id that already has one returns it (a retried create after a leader kill or
restart hands out nothing new). The leader keeps the pools in memory; the head compare
makes any staleness a ``Conflict`` that re-reads, never a duplicate.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from broker import errors
from broker.election.fencing import fenced_txn
from broker.settings import StitchingSettings
from broker.stitching.pools import AddressSpace, IntPool
from broker.store import keys
from broker.store.protocol import Compare, Delete, Op, Put, Store, Target, TxnOp

log = logging.getLogger(__name__)

HEAD = f"{keys.IPAM}head"
RECORDS = f"{keys.IPAM}networks/"
SEGMENTS = f"{keys.IPAM}segments/"
HELD = f"{keys.IPAM}held/"
EXTERNAL = "external"
ATTEMPTS = 32


def held_key(pool: str, value: str) -> str:
    return f"{HELD}{pool}/{value.replace('/', '_')}"


@dataclass(frozen=True, slots=True)
class Request:
    """What a network asks of the pools."""

    network: str
    tenant: str
    region: str = ""
    cidr: str = ""
    """"" for the default size, "/N" for a block of that size, "A.B.C.D/N" for exactly it."""
    vlans: tuple[tuple[str, str], ...] = ()
    """(site, physnet) pairs that need a provider VLAN id."""


@dataclass(frozen=True, slots=True)
class Allocation:
    network: str
    cidr: str
    vni: int
    rt: str
    """Route target ``ASN:N``; the route distinguisher is the same value."""
    vlans: Mapping[str, int] = field(default_factory=dict)
    """``site/physnet`` → VLAN id."""

    @property
    def rd(self) -> str:
        return self.rt

    def as_json(self) -> dict[str, object]:
        return {
            "network": self.network,
            "cidr": self.cidr,
            "vni": self.vni,
            "rt": self.rt,
            "rd": self.rd,
            "vlans": dict(self.vlans),
        }

    @classmethod
    def from_json(cls, raw: bytes) -> Allocation:
        doc = json.loads(raw)
        vlans = {str(k): int(v) for k, v in doc.get("vlans", {}).items()}
        return cls(str(doc["network"]), str(doc["cidr"]), int(doc["vni"]), str(doc["rt"]), vlans)

    def held(self) -> list[tuple[str, str]]:
        """Every (pool, value) this allocation holds."""
        out = [("cidr", self.cidr), ("vni", str(self.vni)), ("rt", self.rt.split(":")[1])]
        out += [(f"vlan/{sp}", str(v)) for sp, v in sorted(self.vlans.items())]
        return out


@dataclass(frozen=True, slots=True)
class Segments:
    """The provider VLAN ids one owner (a VNF) holds: ``<link>@<site>/<physnet>`` → id."""

    owner: str
    vlans: Mapping[str, int]

    def held(self) -> list[tuple[str, str]]:
        return [(f"vlan/{k.split('@', 1)[1]}", str(v)) for k, v in sorted(self.vlans.items())]

    def encode(self) -> bytes:
        doc = {"owner": self.owner, "vlans": dict(self.vlans)}
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Segments:
        doc = json.loads(raw)
        return cls(str(doc["owner"]), {str(k): int(v) for k, v in doc["vlans"].items()})

    def fits(self, wants: Mapping[str, int | None]) -> bool:
        """Whether it holds exactly these keys, with every id asked for."""
        return set(self.vlans) == set(wants) and all(
            w is None or self.vlans[k] == w for k, w in wants.items()
        )


class Ledger:
    """The leader's allocator: pools in memory, truth in etcd, every write fenced."""

    def __init__(self, store: Store, fence: int, settings: StitchingSettings) -> None:
        self.store, self.fence, self.settings = store, fence, settings
        self._lock = asyncio.Lock()
        self._loaded = False
        self._head = 0
        self.records: dict[str, Allocation] = {}
        self.segments: dict[str, Segments] = {}
        self._reset()

    def _reset(self) -> None:
        s = self.settings
        self.space = AddressSpace("addresses")
        self.vni = IntPool("vni", *s.vni_range)
        self.rt = IntPool(f"route targets {s.asn}:N", *s.rt_range)
        self.vlan: dict[str, IntPool] = {}
        for prefix in s.external_prefixes:
            try:
                self.space.take(ipaddress.IPv4Network(prefix), EXTERNAL)
            except errors.AddressOverlap:
                log.warning("external prefix %s overlaps another external prefix", prefix)

    def _vlan_pool(self, site_physnet: str) -> IntPool:
        pool = self.vlan.get(site_physnet)
        if pool is None:
            pool = IntPool(f"vlan ids of {site_physnet}", *self.settings.vlan_range)
            self.vlan[site_physnet] = pool
        return pool

    async def load(self) -> None:
        """Rebuild the pools from etcd (at start, and after any conflict)."""
        kvs, _ = await self.store.get_prefix(keys.IPAM)
        self._reset()
        self.records = {}
        self.segments = {}
        self._head = 0
        for kv in kvs:
            if kv.key == HEAD:
                self._head = kv.mod_revision
            elif kv.key.startswith(RECORDS):
                alloc = Allocation.from_json(kv.value)
                self.records[alloc.network] = alloc
                self._hold(alloc)
            elif kv.key.startswith(SEGMENTS):
                segs = Segments.decode(kv.value)
                self.segments[segs.owner] = segs
                self._hold_vlans(segs)
        self._loaded = True

    def _hold(self, alloc: Allocation) -> None:
        try:
            self.space.take(ipaddress.IPv4Network(alloc.cidr), alloc.network)
        except errors.AddressOverlap as exc:  # an external prefix registered after it
            log.warning("network %s: %s", alloc.network, exc)
        self.vni.take(alloc.vni, alloc.network)
        self.rt.take(int(alloc.rt.split(":")[1]), alloc.network)
        for sp, v in alloc.vlans.items():
            self._vlan_pool(sp).take(v, alloc.network)

    def _hold_vlans(self, segs: Segments) -> None:
        for k, v in segs.vlans.items():
            self._vlan_pool(k.split("@", 1)[1]).take(v, segs.owner)

    def _unhold_vlans(self, segs: Segments) -> None:
        for k, v in segs.vlans.items():
            self._vlan_pool(k.split("@", 1)[1]).release(v)

    def _unhold(self, alloc: Allocation) -> None:
        self.space.release(ipaddress.IPv4Network(alloc.cidr))
        self.vni.release(alloc.vni)
        self.rt.release(int(alloc.rt.split(":")[1]))
        for sp, v in alloc.vlans.items():
            self._vlan_pool(sp).release(v)

    def supernets(self, tenant: str, region: str) -> tuple[ipaddress.IPv4Network, ...]:
        table = self.settings.supernets
        for key in (f"{tenant}/{region}", tenant, f"*/{region}", "*"):
            if key in table:
                return tuple(ipaddress.IPv4Network(n) for n in table[key])
        return ()

    def _pick(self, req: Request) -> Allocation:
        """Take every value ``req`` needs from the pools (all or nothing)."""
        done: list[tuple[IntPool, int]] = []
        net = self._pick_block(req)
        try:
            vni = self.vni.allocate(req.network)
            done.append((self.vni, vni))
            rt = self.rt.allocate(req.network)
            done.append((self.rt, rt))
            vlans = {}
            for site, physnet in req.vlans:
                pool = self._vlan_pool(f"{site}/{physnet}")
                vlans[f"{site}/{physnet}"] = pool.allocate(req.network)
                done.append((pool, vlans[f"{site}/{physnet}"]))
        except BaseException:
            self.space.release(net)
            for pool, value in done:
                pool.release(value)
            raise
        return Allocation(req.network, str(net), vni, f"{self.settings.asn}:{rt}", vlans)

    def _pick_block(self, req: Request) -> ipaddress.IPv4Network:
        text = req.cidr or f"/{self.settings.default_prefixlen}"
        if text.startswith("/"):
            try:
                prefixlen = int(text[1:])
            except ValueError:
                raise errors.InvalidInput("cidr", f"{text!r} is not /N") from None
            if not 8 <= prefixlen <= 29:
                raise errors.InvalidInput("cidr", f"/{prefixlen}: ask for /8 to /29")
            supers = self.supernets(req.tenant, req.region)
            return self.space.allocate(supers, prefixlen, req.network)
        try:
            net = ipaddress.IPv4Network(text, strict=True)
        except ValueError as exc:
            raise errors.InvalidInput("cidr", f"{text!r}: {exc}") from None
        if net.prefixlen > 29:
            raise errors.InvalidInput("cidr", f"{net}: a network needs a /29 or larger")
        self.space.take(net, req.network)
        return net

    async def allocate(self, req: Request) -> Allocation:
        """The network's allocation: the one it has, or a new one landed whole."""
        async with self._lock:
            for _ in range(ATTEMPTS):
                if not self._loaded:
                    await self.load()
                found = self.records.get(req.network)
                if found is not None:
                    return found
                alloc = self._pick(req)
                ops: list[TxnOp] = [Put(RECORDS + req.network, _encode(alloc))]
                held = [held_key(p, v) for p, v in alloc.held()]
                ops += [Put(k, req.network.encode()) for k in held]
                checks = [Compare(k, Target.CREATE, Op.EQUAL, 0) for k in held]
                if await self._write(ops, checks):
                    self.records[req.network] = alloc
                    return alloc
                self._unhold(alloc)
            raise errors.Conflict(f"network {req.network}: allocation kept conflicting")

    async def release(self, network: str) -> Allocation | None:
        """Give back everything ``network`` holds; None when it holds nothing."""
        async with self._lock:
            for _ in range(ATTEMPTS):
                if not self._loaded:
                    await self.load()
                alloc = self.records.get(network)
                if alloc is None:
                    return None
                if await self._drop(RECORDS + network, alloc.held()):
                    del self.records[network]
                    self._unhold(alloc)
                    return alloc
            raise errors.Conflict(f"network {network}: release kept conflicting")

    async def hold_vlans(self, owner: str, wants: Mapping[str, int | None]) -> dict[str, int]:
        """The VLAN ids ``owner`` holds for ``wants`` (``<link>@<site>/<physnet>`` → the id
        asked for, or None for any free one), landed whole; what it held before and no
        longer wants is given back in the same transaction, and a key it keeps keeps its id
        (unless another is asked for). ``AllocationRefused`` (409)
        when an asked id is held by another or outside the range, or a pool is empty."""
        async with self._lock:
            for _ in range(ATTEMPTS):
                await self._fresh()
                before = self.segments.get(owner)
                if before is None and not wants:
                    return {}
                if before is not None and before.fits(wants):
                    return dict(before.vlans)
                asks = dict(wants)
                if before is not None:
                    self._unhold_vlans(before)
                    asks = _keeping(before.vlans, wants)
                try:
                    after = Segments(owner, self._pick_vlans(owner, asks))
                except BaseException:
                    if before is not None:
                        self._hold_vlans(before)
                    raise
                old = {held_key(p, v) for p, v in before.held()} if before else set()
                new = {held_key(p, v) for p, v in after.held()}
                ops: list[TxnOp] = [Put(SEGMENTS + owner, after.encode())]
                ops += [Delete(k) for k in sorted(old - new)]
                ops += [Put(k, owner.encode()) for k in sorted(new - old)]
                checks = [Compare(k, Target.CREATE, Op.EQUAL, 0) for k in sorted(new - old)]
                if await self._write(ops, checks):
                    self.segments[owner] = after
                    return dict(after.vlans)
                self._unhold_vlans(after)
            raise errors.Conflict(f"{owner}: VLAN allocation kept conflicting")

    async def _fresh(self) -> None:
        """Re-read when another writer (the other controller's ledger) moved the head: the
        VLAN answers (what an owner holds, what is refused) come from a current view."""
        head = await self.store.get(HEAD)
        if not self._loaded or (head.mod_revision if head is not None else 0) != self._head:
            await self.load()

    def _pick_vlans(self, owner: str, wants: Mapping[str, int | None]) -> dict[str, int]:
        """Asked-for ids first (so a free pick never takes one asked for), all or nothing."""
        done: dict[str, int] = {}
        order = sorted(wants, key=lambda k: (wants[k] is None, k))
        try:
            for k in order:
                pool = self._vlan_pool(k.split("@", 1)[1])
                done[k] = pool.allocate(owner, wants[k])
        except BaseException:
            for k, v in done.items():
                self._vlan_pool(k.split("@", 1)[1]).release(v)
            raise
        return done

    async def release_vlans(self, owner: str) -> Segments | None:
        """Give back every VLAN id ``owner`` holds; None when it holds none."""
        async with self._lock:
            for _ in range(ATTEMPTS):
                await self._fresh()
                segs = self.segments.get(owner)
                if segs is None or await self._drop(SEGMENTS + owner, segs.held()):
                    break
            else:
                raise errors.Conflict(f"{owner}: VLAN release kept conflicting")
            if segs is not None:
                del self.segments[owner]
                self._unhold_vlans(segs)
            return segs

    async def _drop(self, record: str, held: list[tuple[str, str]]) -> bool:
        """Delete a record and its held keys in one fenced write; False on a conflict."""
        return await self._write([Delete(record), *(Delete(held_key(p, v)) for p, v in held)], [])

    async def _write(self, ops: list[TxnOp], checks: list[Compare]) -> bool:
        """One fenced txn guarded by the head; False (and a re-read due) on a conflict."""
        guard = Compare(HEAD, Target.MOD, Op.EQUAL, self._head)
        try:
            result = await fenced_txn(
                self.store, self.fence, [Put(HEAD, b""), *ops], [guard, *checks]
            )
        except errors.Conflict:
            self._loaded = False
            await asyncio.sleep(random.uniform(0, 0.005))  # another writer: let it finish
            return False
        except BaseException:
            self._loaded = False  # the outcome may be unknown: re-read before the next
            raise
        self._head = result.revision
        return True

    def left(self) -> dict[str, str]:
        """What each pool has left, for messages and the API."""
        out = {"vni": self.vni.describe(), "rt": self.rt.describe()}
        out.update({sp: p.describe() for sp, p in sorted(self.vlan.items())})
        return out


def _keeping(held: Mapping[str, int], wants: Mapping[str, int | None]) -> dict[str, int | None]:
    """``wants`` with each key already held asking for its id (its network exists with
    it), unless another key of that pool asks for that id outright."""
    asked = {(k.split("@", 1)[1], w) for k, w in wants.items() if w is not None}
    out = dict(wants)
    for k, w in wants.items():
        v = held.get(k)
        if w is None and v is not None and (k.split("@", 1)[1], v) not in asked:
            out[k] = v
    return out


def _encode(alloc: Allocation) -> bytes:
    return json.dumps(alloc.as_json(), separators=(",", ":")).encode()
