"""The replication controller's view of etcd, kept in memory: the catalog and replica
states (``images/``), the registered sites (``sites/``), the connected ones
(``sitestatus/``) and the agents' copy reports and audits (``observed/``).

It also holds which images have a recorded piece list (``imagepieces/``, by digest
only: the lists themselves stay in etcd), where the last piece list a source reported
for each image is (its site and revision) and where each connected site serves directly
(from its audit): what the tracker decides swarms from.

The controller feeds it every listed key and watch event of ``follow.follow`` on those
prefixes (``take``) and each ``Listed`` mark (``listed``), so a pass decides from
memory and costs no etcd request; the same decoding serves a one-off read (``load``).

Invariant: after every prefix has been listed, the view holds exactly what etcd held at
the revisions it has seen, with one exception that only moves it forward: a replica the
controller wrote itself is taken at the write's revision before its watch event arrives,
and an older event for that key never replaces it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from broker import errors
from broker.models import codec, objects
from broker.models.site import SiteSpec
from broker.store import follow, keys
from broker.store.protocol import KeyValue, Store, WatchEvent
from replication import catalog, pieces, policy
from replication import errors as rerrors
from replication.catalog import Entry, Replica, SiteId

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Audit:
    """A site's last complete listing: image → (sha256, size); ``busy`` is not judged."""

    held: Mapping[str, tuple[str, int]]
    busy: frozenset[str]
    revision: int
    direct_address: str = ""


@dataclass(slots=True)
class World:
    """Everything one pass decides from."""

    entries: dict[str, Entry] = field(default_factory=dict)
    replicas: dict[str, dict[SiteId, tuple[Replica, int]]] = field(default_factory=dict)
    sites: list[policy.SiteInfo] = field(default_factory=list)
    connected: frozenset[str] = frozenset()
    reports: dict[tuple[str, str], objects.CopyReport] = field(default_factory=dict)
    audits: dict[str, Audit] = field(default_factory=dict)
    pieces: dict[str, str] = field(default_factory=dict)  # image -> its piece list's digest
    awaiting: set[str] = field(default_factory=set)  # images whose piece list should come
    piece_reports: dict[str, tuple[str, int]] = field(default_factory=dict)
    """image -> (site, revision) of the last piece list a site reported for it."""

    @property
    def addresses(self) -> dict[str, str]:
        """Where each connected site serves directly (absent: behind NAT)."""
        return {s: a.direct_address for s, a in self.audits.items() if a.direct_address}


PREFIXES = (keys.IMAGES, keys.SITES, keys.SITESTATUS, keys.OBSERVED, keys.IMAGE_PIECES)


class View:
    """What the controller knows; ``world()`` is a snapshot one pass decides from."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.replicas: dict[str, dict[SiteId, tuple[Replica, int]]] = {}
        self.sites: dict[str, policy.SiteInfo] = {}
        self.connected: set[str] = set()
        self.reports: dict[tuple[str, str], objects.CopyReport] = {}
        self.audits: dict[str, Audit] = {}
        self.pieces: dict[str, str] = {}
        self.piece_reports: dict[str, tuple[str, int]] = {}
        self.listed: set[str] = set()
        self._held: dict[str, set[str]] = {p: set() for p in PREFIXES}

    @property
    def complete(self) -> bool:
        return self.listed >= set(PREFIXES)

    def mark(self, item: follow.Listed) -> None:
        """A prefix's listing is complete: drop what it no longer holds."""
        for key in follow.forgotten(item, self._held[item.prefix]):
            self._apply(key, b"", item.revision + 1)
        self.listed.add(item.prefix)

    def take(self, item: KeyValue | WatchEvent) -> bool:
        """Apply a listed key or an event; True when the controller should look again."""
        key, value = follow.change(item)
        return self._apply(key, value, item.mod_revision)

    def wrote(self, replica: Replica, revision: int) -> None:
        """The controller wrote ``replica`` at ``revision`` (its event follows later)."""
        key = keys.image_replica(replica.image, replica.site)
        self._apply(key, catalog.encode_replica(replica), revision)

    def world(self) -> World:
        """A copy: the followers may change the view while a pass is writing."""
        return World(
            entries=dict(self.entries),
            replicas={i: dict(r) for i, r in self.replicas.items()},
            sites=[self.sites[s] for s in sorted(self.sites)],
            connected=frozenset(self.connected),
            reports={k: r for k, r in self.reports.items() if k[1] in self.connected},
            audits={s: a for s, a in self.audits.items() if s in self.connected},
            pieces=dict(self.pieces),
            piece_reports=dict(self.piece_reports),
        )

    def recorded(self, image: str, raw: bytes, revision: int) -> None:
        """The controller recorded ``image``'s piece list at ``revision``."""
        self._apply(keys.image_pieces(image), raw, revision)

    def _apply(self, key: str, value: bytes, revision: int) -> bool:
        prefix = next((p for p in PREFIXES if key.startswith(p)), None)
        if prefix is None:
            return False
        held = self._held[prefix]
        if value:
            held.add(key)
        else:
            held.discard(key)
        try:
            if prefix == keys.IMAGES:
                return self._image(key, value, revision)
            if prefix == keys.IMAGE_PIECES:
                image = key.removeprefix(keys.IMAGE_PIECES)
                self.pieces.pop(image, None)
                if value:
                    self.pieces[image] = pieces.Manifest.from_dict(json.loads(value)).digest()
            elif prefix == keys.SITES:
                self._site(keys.name_in(keys.SITES, key), value)
            elif prefix == keys.SITESTATUS:
                site = keys.name_in(keys.SITESTATUS, key)
                (self.connected.add if value else self.connected.discard)(site)
            else:
                return self._observed(key, value, revision)
        except (errors.InvalidInput, rerrors.ReplicationError, ValueError) as exc:
            log.error("image replication: %s is corrupt, skipped: %s", key, exc)
        return True

    def _image(self, key: str, value: bytes, revision: int) -> bool:
        image, site = keys.split_image_key(key)
        if not site:
            self.entries.pop(image, None)
            if value:
                self.entries[image] = Entry.decode(value)
            return True
        per_image = self.replicas.setdefault(image, {})
        held = per_image.get(SiteId(site))
        if held is not None and held[1] > revision:
            return False  # our own newer write is already here
        per_image.pop(SiteId(site), None)
        if value:
            per_image[SiteId(site)] = (catalog.decode_replica(value), revision)
        elif not per_image:
            del self.replicas[image]
        return True

    def _site(self, name: str, value: bytes) -> None:
        self.sites.pop(name, None)
        if value:
            spec = codec.decode(SiteSpec, value)
            self.sites[name] = policy.SiteInfo(SiteId(spec.id), spec.region, dict(spec.labels))

    def _observed(self, key: str, value: bytes, revision: int) -> bool:
        site, kind, name = keys.split_object(key)
        if kind == objects.IMAGE_COPY.name:
            self.reports.pop((name, site), None)
            if value:
                self.reports[(name, site)] = objects.IMAGE_COPY.decode(value)
            return True
        if kind == objects.IMAGE_PIECES.name:  # only where it is: the list stays in etcd
            self.piece_reports.pop(name, None)
            if value:
                self.piece_reports[name] = (site, revision)
            return True
        if kind == objects.IMAGE_AUDIT.name and key == keys.image_audit(site):
            self.audits.pop(site, None)
            if value:
                found = objects.IMAGE_AUDIT.decode(value)
                held = {i: (h.sha256, h.size) for i, h in found.held.items()}
                self.audits[site] = Audit(
                    held, frozenset(found.busy), revision, found.direct_address
                )
            return True
        return False


async def load(store: Store) -> World:
    """Read the world from etcd once, as the followers read it: a paged listing of each
    followed prefix (the controller's safety resync, and passes run without followers).
    Never a read per site: at 10,000 connected sites, reading each one's copies and
    audit was 20,000 requests every resync -- the bulk of etcd's load in a quiet
    federation."""
    view = View()
    for prefix in PREFIXES:
        kvs, _ = await store.get_prefix(prefix)
        for kv in kvs:
            view.take(kv)
    return view.world()
