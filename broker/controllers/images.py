"""The replication controller (leader only): get every catalog image to the sites that
should hold it, follow the copies, and repair drift.

It follows ``images/``, ``sites/``, ``sitestatus/`` and ``observed/`` into memory
(``imageview``: the catalog, the replica states, the registered and connected sites, what
the agents reported) and, on every change and every ``interval`` seconds (stalls are
judged by time), decides from that view for each image (``decide``, pure) — steady
state costs etcd nothing; every ``resync`` seconds a pass reads etcd afresh instead:

- a site the policy or an explicit request wants gets a ``queued`` replica;
- a queued replica at a connected site is assigned a source — an ``active`` replica at a
  connected site with fewer than ``cap`` copies running from it (relay fan-out: every
  site that finished serves the next ones, so N sites take O(log N) rounds) — and becomes
  ``transferring`` with a new attempt number, which the gateway turns into a copy order;
  the source site's own replica is activated from its audit when its bytes match the
  registered sha256, and fails saying so when they do not;
- an attempt's reports move it along (progress, ``active`` only with the catalog's
  sha256, ``failed`` with the agent's reason; temporary failures and stalls re-queue, up
  to ``max_attempts``);
- drift: an ``active`` replica that a later audit shows missing or with another sha256
  is re-queued (``repairs`` counts it) and an ``image.drift`` event says why;
- the tracker (``replication.tracker``): once the source is active, the piece list its
  agent reported (``observed/<source>/imagepieces/<id>``, for the catalog's sha256 and
  size) is recorded in the catalog (``imagepieces/<id>``, fenced); from then on a queued
  destination that serves directly is started as a **swarm** copy (``Replica.swarm``,
  not bound by ``cap``: holders choke their own uploads), the gateway ordering it with
  the piece list and a grant per peer; a destination behind NAT copies as before. For
  its first ``PIECES_WAIT`` seconds, an image whose source serves directly has no copy
  started to a destination that could swarm: its piece list is on its way.

Invariant 3: every write is one fenced transaction (the replica and its event); a
deposed leader's writes never land. Invariant 8 is the agent's (it verifies before
reporting active); this controller additionally refuses an ``active`` whose reported
sha256 differs from the catalog.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from broker import errors
from broker.controllers import imageview, registry
from broker.controllers.imageview import World
from broker.election.fencing import fenced_txn
from broker.models import codec, event, objects
from broker.store import follow, keys
from broker.store.protocol import Put, Store
from replication import catalog, pieces, policy, tracker
from replication import errors as rerrors
from replication.catalog import Entry, Replica, SiteId, State

log = logging.getLogger(__name__)

PIECES_WAIT = 20.0  # seconds destinations that could swarm wait for the source's piece list


Report = objects.CopyReport
"""One attempt's last progress report from the destination (``observed/<site>/imagecopy/``)."""


@dataclass(frozen=True, slots=True)
class Change:
    replica: Replica
    event: tuple[str, str] | None = None  # (kind, message)


@dataclass(frozen=True, slots=True)
class Limits:
    cap: int = 2  # copies one holder serves at a time
    concurrency: int = 64  # copies running federation-wide
    max_attempts: int = 5
    stall_after: float = 30.0  # seconds without a report before an attempt is re-queued


def decide(
    entry: Entry,
    replicas: Mapping[SiteId, tuple[Replica, int]],
    world: World,
    limits: Limits,
    stalled: Callable[[Replica], bool],
    running: dict[str, int],
) -> list[Change]:
    """Every replica change one image needs now. ``running`` counts copies per source
    (and ``""``: all of them) across images; it is updated as copies are started."""
    img = entry.image
    now = {s: r for s, (r, _) in replicas.items()}
    out: dict[SiteId, Change] = {}

    def put(r: Replica, ev: tuple[str, str] | None = None) -> None:
        before = now.get(r.site)
        if before is not None and before.state is State.TRANSFERRING:
            count(running, before, -1)
        if r.state is State.TRANSFERRING:
            count(running, r, +1)
        now[r.site] = r
        out[r.site] = Change(r, ev if ev is not None else out.get(r.site, Change(r)).event)

    pol = policy.parse(entry.policy)
    known = {s.id for s in world.sites}
    wanted = set(policy.resolve(pol, world.sites)) if pol is not None else set()
    wanted |= {t for t in entry.targets if t in known} | {img.source_site}
    for site in sorted(wanted - now.keys()):
        put(
            Replica(img.id, site, generation=entry.generation).queue(
                priority=policy.POLICY_PRIORITY
            )
        )

    for site, r in sorted(now.items()):
        if r.state is State.FAILED and r.generation < entry.generation and site in wanted:
            r = dataclasses.replace(r, attempts=0, generation=entry.generation)
            put(r.queue())
        elif r.state in (State.TRANSFERRING, State.VERIFYING):
            _follow(r, img, world, limits, stalled, put)
        elif r.state is State.ACTIVE:
            audit = world.audits.get(site)
            if audit is None or audit.revision <= replicas[site][1] or img.id in audit.busy:
                continue
            held = audit.held.get(img.id)
            problem = ""
            if held is None:
                problem = f"image {img.id} is missing at {site}"
            elif held[0] != img.sha256:
                problem = f"image {img.id} at {site} has sha256 {held[0]}, not {img.sha256}"
            if problem:
                repaired = dataclasses.replace(
                    r.queue(), repairs=r.repairs + 1, reason=problem, offset=0
                )
                put(repaired, ("image.drift", f"{problem}: re-copying"))

    # the source first: once its audit activates it, it serves copies in the same pass
    order = sorted(now.items(), key=lambda kv: (kv[0] != img.source_site, -kv[1].priority, kv[0]))
    for site, r in order:
        if r.state is State.QUEUED and site in world.connected:
            written = replicas[site][1] if site in replicas else None
            _schedule(r, img, now, written, world, limits, running, put)
    return list(out.values())


def count(running: dict[str, int], r: Replica, n: int) -> None:
    """A copy starts (+1) or ends (-1): federation-wide, and for its source unless it
    swarms (a swarm's holders choke their own uploads: ``cap`` is for one-source copies)."""
    running[""] = running.get("", 0) + n
    if not r.swarm:
        running[r.source] = running.get(r.source, 0) + n


def _follow(
    r: Replica,
    img: catalog.Image,
    world: World,
    limits: Limits,
    stalled: Callable[[Replica], bool],
    put: Callable[..., None],
) -> None:
    rep = world.reports.get((img.id, r.site))
    if rep is None or rep.attempt != r.ticket:
        if r.site not in world.connected:
            put(dataclasses.replace(r.queue(), reason=f"{r.site} disconnected mid-copy"))
        elif stalled(r):
            put(dataclasses.replace(r.queue(), reason="no progress report: re-queued"))
        return
    if rep.state == "transferring" and rep.offset != r.offset and r.state is State.TRANSFERRING:
        put(r.progress(rep.offset, rep.rate))
    elif rep.state == "active":
        if rep.sha256 != img.sha256:
            why = f"reported sha256 {rep.sha256} does not match the catalog's {img.sha256}"
            put(r.fail(why), ("image.failed", f"{img.id} at {r.site}: {why}"))
            return
        base = r.verify() if r.state is State.TRANSFERRING else r
        put(dataclasses.replace(base.activate(img.size), sha256=rep.sha256))
    elif rep.state == "failed":
        if rep.temporary and r.attempts < limits.max_attempts:
            put(dataclasses.replace(r.queue(), reason=f"retrying after: {rep.reason}"))
        else:
            put(r.fail(rep.reason), ("image.failed", f"{img.id} at {r.site}: {rep.reason}"))
    elif stalled(r):
        put(dataclasses.replace(r.queue(), reason="no progress report: re-queued"))


def _schedule(
    r: Replica,
    img: catalog.Image,
    now: Mapping[SiteId, Replica],
    written: int | None,
    world: World,
    limits: Limits,
    running: dict[str, int],
    put: Callable[..., None],
) -> None:
    if img.id in world.awaiting and world.addresses.get(r.site) and r.site != img.source_site:
        return  # the source's piece list is on its way: swarm rather than copy one by one
    if img.id in world.pieces and r.site != img.source_site:
        seeds = tracker.seeds(now, world.addresses, world.connected)
        if tracker.swarms(r.site, world.addresses, seeds):
            if running.get("", 0) < limits.concurrency:
                seed = min(seeds, key=lambda s: (running.get(s, 0), s))
                put(r.start(source=seed, swarm=True))
            return
    holders = [
        s
        for s, h in now.items()
        if h.state is State.ACTIVE and s in world.connected and s != r.site
    ]
    if r.site == img.source_site:
        audit = world.audits.get(r.site)
        if audit is None or written is None or audit.revision <= written:
            return  # judge the source only by an audit taken after it was queued
        if img.id in audit.busy:
            return  # its bytes were changing while audited: the next audit judges
        held = audit.held.get(img.id)
        if held is not None and held[0] == img.sha256 and held[1] == img.size:
            started = r.start(source=r.site).verify()
            put(dataclasses.replace(started.activate(img.size), sha256=held[0]))
            return
        if not holders:
            why = (
                f"the source site does not hold {img.id}"
                if held is None
                else f"the source's bytes do not match the registered checksum "
                f"(sha256 {held[0]}, {held[1]} bytes)"
            )
            put(r.fail(why), ("image.failed", f"{img.id} at {r.site}: {why}"))
            return
    if running.get("", 0) >= limits.concurrency:
        return
    by_load = sorted(holders, key=lambda s: (running.get(s, 0), s))
    free = [s for s in by_load if running.get(s, 0) < limits.cap]
    if not free:
        return
    put(r.start(source=free[0]))  # the reason (why it was re-queued) stays until active


def piece_list(entry: Entry, report: objects.PieceReport | None) -> bytes | None:
    """The piece list to record for ``entry`` from its source's report (canonical JSON),
    or None when the report is absent or not for the catalog's bytes."""
    img = entry.image
    if report is None or report.sha256 != img.sha256:
        return None
    try:
        manifest = pieces.Manifest.from_dict(json.loads(report.pieces))
    except (ValueError, rerrors.ReplicationError):
        return None
    if manifest.size != img.size or len(manifest) > pieces.MAX_RECORDED:
        return None
    return json.dumps(manifest.to_dict(), sort_keys=True, separators=(",", ":")).encode()


class ImageController:
    """``interval``: seconds between passes from memory when nothing changes (stalls are
    judged by time); ``resync``: seconds between passes from a fresh etcd read."""

    def __init__(
        self,
        store: Store,
        fence: int,
        *,
        name: str = "",
        limits: Limits = Limits(),
        interval: float = 2.0,
        resync: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.fence, self.name = store, fence, name
        self.limits = limits
        self.interval, self.resync = interval, resync
        self.clock = clock
        self.view = imageview.View()
        self._kick = asyncio.Event()
        self._seen: dict[tuple[str, str], tuple[tuple[object, ...], float]] = {}
        self._asked: dict[str, int] = {}  # image -> the revision of the report last read
        self._since: dict[str, float] = {}  # image -> first seen without a piece list

    async def run(self) -> None:
        """Reconcile until cancelled (the replica stops leading)."""
        async with asyncio.TaskGroup() as group:
            for prefix in imageview.PREFIXES:
                group.create_task(self._follow(prefix))
            group.create_task(self._loop())

    async def _follow(self, prefix: str) -> None:
        async for item in follow.follow(self.store, prefix):
            if isinstance(item, follow.Listed):
                self.view.mark(item)
                self._kick.set()
            elif self.view.take(item) and self.view.complete:
                self._kick.set()

    async def _loop(self) -> None:
        synced = self.clock()
        while True:
            await self._kick.wait()
            if self.view.complete:
                break
            self._kick.clear()
        while True:
            self._kick.clear()
            fresh = self.clock() - synced >= self.resync
            try:
                await self.reconcile(None if fresh else self.view.world())
                synced = self.clock() if fresh else synced
            except errors.StoreUnavailable as exc:
                log.warning("image replication paused: %s", exc)
            try:
                await asyncio.wait_for(self._kick.wait(), self.interval)
            except TimeoutError:
                pass

    async def load(self) -> World:
        """The world read from etcd now (what a pass without a view decides from)."""
        return await imageview.load(self.store)

    def _stalled(self, r: Replica) -> bool:
        key = (r.image, r.site)
        mark = (r.state, r.attempts, r.offset)
        now = self.clock()
        seen = self._seen.get(key)
        if seen is None or seen[0] != mark:
            self._seen[key] = (mark, now)
            return False
        return now - seen[1] > self.limits.stall_after

    async def reconcile(self, world: World | None = None) -> int:
        """One pass over every image (from ``world``, else read from etcd now); returns
        how many replicas changed."""
        w = world if world is not None else await self.load()
        running: dict[str, int] = {}
        for per_image in w.replicas.values():
            for r, _ in per_image.values():
                if r.state is State.TRANSFERRING:
                    count(running, r, +1)
        changed = await self._record_pieces(w)
        for image_id, entry in sorted(w.entries.items()):
            replicas = w.replicas.get(image_id, {})
            for change in decide(entry, replicas, w, self.limits, self._stalled, running):
                await self._write(change)
                changed += 1
        return changed

    async def _record_pieces(self, w: World) -> int:
        """Record the piece list of each image whose source is active and has none yet
        (its source's report read from etcd once per report: steady state reads nothing)."""
        recorded = 0
        for image_id, entry in sorted(w.entries.items()):
            if image_id in w.pieces:
                self._since.pop(image_id, None)
                continue
            since = self._since.setdefault(image_id, self.clock())
            if w.addresses.get(entry.image.source_site) and self.clock() - since < PIECES_WAIT:
                w.awaiting.add(image_id)
            source = w.replicas.get(image_id, {}).get(entry.image.source_site)
            if source is None or source[0].state is not State.ACTIVE:
                continue
            reported = w.piece_reports.get(image_id)
            if reported is None or reported[0] != entry.image.source_site:
                continue
            if self._asked.get(image_id) == reported[1]:
                continue  # this report was read and is not the catalog's
            self._asked[image_id] = reported[1]
            kv = await self.store.get(keys.piece_report(entry.image.source_site, image_id))
            try:
                report = objects.IMAGE_PIECES.decode(kv.value) if kv is not None else None
            except errors.InvalidInput:
                report = None
            raw = piece_list(entry, report)
            if raw is None:
                continue
            put = Put(keys.image_pieces(image_id), raw)
            result = await fenced_txn(self.store, self.fence, [put])
            self.view.recorded(image_id, raw, result.revision)
            w.pieces[image_id] = pieces.Manifest.from_dict(json.loads(raw)).digest()
            w.awaiting.discard(image_id)
            log.info("image %s: piece list recorded (swarming)", image_id)
            recorded += 1
        return recorded

    async def _write(self, change: Change) -> None:
        r = change.replica
        ops = [Put(keys.image_replica(r.image, r.site), catalog.encode_replica(r))]
        if change.event is not None:
            kind, message = change.event
            ev = event.new(kind, r.site, message, replica=self.name)
            ops.append(Put(keys.event(ev.id), codec.encode(ev)))
        result = await fenced_txn(self.store, self.fence, ops)
        self.view.wrote(r, result.revision)
        log.info("image %s at %s: %s %s", r.image, r.site, r.state.value, r.reason)


@registry.controller("image replication")
def _start(ctx: registry.Context) -> ImageController:
    images = ctx.settings.images
    return ImageController(
        ctx.store, ctx.fence, name=ctx.settings.name, resync=images.resync_interval
    )
