"""The etcd key schema (under the root prefix ``/meridian/v1/``, added by the store).

One function per key family, so no module spells a key by hand.
"""

from __future__ import annotations

from broker.models import objects

ROOT = "/meridian/v1/"

SITES = "sites/"
SITESTATUS = "sitestatus/"
INVENTORY = "inventory/"
HEALTH = "health/"
DESIRED = "desired/"
OBSERVED = "observed/"
EVENTS = "events/"
USAGE = "usage/"
REVOKED = "pki/revoked/"
LEADER = "election/controller"
REPLICAS = "replicas/"
QUOTA = "quota/"  # the quota ledger's root; its layout is quota.ledger's
VNFS = "vnfs/"
PLACEMENTS = "placements/"
CLAIMS = "claims/"
LATENCY = "latency"
IMAGES = "images/"
IMAGE_PIECES = "imagepieces/"  # an image's recorded piece list (replication controller, fenced)
IPAM = "ipam/"  # global pools of stitched networks; layout: broker.stitching.ledger
NETWORKS = "networks/"
FAILOVER = "failover/"
FAILOVER_ASKED = "failover-asked/"
DRILLS = "drills/"  # drills (issue 11): the API writes plans, the drill controller runs them
DRILL_CUTS = "drill-cuts/"
DRILL_ASKED = "drill-asked/"
DRILL_QUARANTINE = "drill-quarantine/"  # sites a live drill isolates (drills; gateways refuse)
SURVIVABILITY = "reports/survivability"  # the leader's last N+1 report (issue 11), fenced
RTO_MEASURED = "reports/rto"  # measured promotion/restore samples, p99s (broker.drills.rto)
IDEMPOTENCY = "idempotency/"  # create requests' Idempotency-Keys (leased; broker.api.idempotency)
DRAINS = "drains/"


def site(site_id: str) -> str:
    return f"{SITES}{site_id}"


def sitestatus(site_id: str) -> str:
    return f"{SITESTATUS}{site_id}"


def inventory(site_id: str) -> str:
    return f"{INVENTORY}{site_id}"


def usage(site_id: str) -> str:
    """Per-project usage a site's agent last reported: {project: {class: amount}}."""
    return f"{USAGE}{site_id}"


def health(site_id: str) -> str:
    return f"{HEALTH}{site_id}"


def desired(site_id: str, kind: str = "", name: str = "") -> str:
    """``desired/<site>/`` (all of a site), or one object's key."""
    if not kind:
        return f"{DESIRED}{site_id}/"
    return f"{DESIRED}{site_id}/{kind}/{name}"


def observed(site_id: str, kind: str = "", name: str = "") -> str:
    if not kind:
        return f"{OBSERVED}{site_id}/"
    return f"{OBSERVED}{site_id}/{kind}/{name}"


def event(event_id: str) -> str:
    return f"{EVENTS}{event_id}"


def revoked(serial: int) -> str:
    """A revoked certificate serial, as lower-case hex without leading zeros."""
    return f"{REVOKED}{serial:x}"


def replica(name: str) -> str:
    return f"{REPLICAS}{name}"


def vnf(vnf_id: str) -> str:
    """A VNF: its descriptor, wanted state and status (API writes, placement updates)."""
    return f"{VNFS}{vnf_id}"


def failover(vnf_id: str) -> str:
    """A followed VNF's failover machines, one per VDU (the failover controller, fenced)."""
    return f"{FAILOVER}{vnf_id}"


def failover_asked(vnf_id: str) -> str:
    """An operator's switchover asked for a VNF (the API writes; the controller consumes)."""
    return f"{FAILOVER_ASKED}{vnf_id}"


def drain(site_id: str) -> str:
    """A site being drained for maintenance (the API writes and removes; failover reads)."""
    return f"{DRAINS}{site_id}"


def drill(drill_id: str) -> str:
    """A drill's plan and result (a what-if writes nothing else: invariant 14)."""
    return f"{DRILLS}{drill_id}"


def idempotency(digest: str) -> str:
    """A create request's Idempotency-Key, by the digest of its caller and key: what it
    created and the fingerprint of its body (the API, in the creating txn, leased)."""
    return f"{IDEMPOTENCY}{digest}"


def drill_cut(vnf_id: str) -> str:
    """A live drill's cut of a VNF: the sites whose members failover treats as lost
    (the drill controller writes and lifts it, fenced; the failover controller reads it)."""
    return f"{DRILL_CUTS}{vnf_id}"


def drill_quarantine(site_id: str) -> str:
    """A live drill's quarantine of a whole site (``isolate: site``): every gateway
    replica closes and refuses the site's stream while it exists (the drill controller
    writes and deletes it, fenced)."""
    return f"{DRILL_QUARANTINE}{site_id}"


def drill_asked(drill_id: str) -> str:
    """An operator's abort of a live drill (the API writes; the drill controller reads)."""
    return f"{DRILL_ASKED}{drill_id}"


def placement(vnf_id: str) -> str:
    """The placement decision of a VNF: assignment and explanation (placement, fenced)."""
    return f"{PLACEMENTS}{vnf_id}"


def claims(site_id: str) -> str:
    """Every placed member's hardware claim at a site (placement, fenced)."""
    return f"{CLAIMS}{site_id}"


def image(image_id: str) -> str:
    """An image's catalog record: the image, its policy and wanted targets (API writes)."""
    return f"{IMAGES}{image_id}"


def image_replicas(image_id: str) -> str:
    """``images/<id>/replicas/``: every site's replica state of one image."""
    return f"{IMAGES}{image_id}/replicas/"


def image_replica(image_id: str, site_id: str) -> str:
    """One site's replica state of an image (replication controller, fenced)."""
    return f"{IMAGES}{image_id}/replicas/{site_id}"


def split_image_key(key: str) -> tuple[str, str]:
    """``images/<id>`` -> (id, ""); ``images/<id>/replicas/<site>`` -> (id, site)."""
    rest = key[len(IMAGES) :]
    image_id, _, tail = rest.partition("/")
    return image_id, tail.removeprefix("replicas/") if tail else ""


def image_pieces(image_id: str) -> str:
    """The catalog's piece list of an image, recorded from its source's report (fenced):
    what swarm orders carry and grants name (``replication.pieces.Manifest.digest``)."""
    return f"{IMAGE_PIECES}{image_id}"


def piece_report(site_id: str, image_id: str) -> str:
    """The piece list a site computed from the bytes it holds (gateway writes)."""
    return observed(site_id, objects.IMAGE_PIECES.name, image_id)


def image_copy(site_id: str, image_id: str) -> str:
    """A copy attempt's progress report at its destination (gateway writes)."""
    return observed(site_id, objects.IMAGE_COPY.name, image_id)


def image_audit(site_id: str) -> str:
    """A site's last complete image audit: what it holds, with sha256 (gateway writes)."""
    return observed(site_id, objects.IMAGE_AUDIT.name, "held")


def network(network_id: str) -> str:
    """A stitched network: its request, allocation and state (API writes, stitching)."""
    return f"{NETWORKS}{network_id}"


def split_object(key: str) -> tuple[str, str, str]:
    """``desired/<site>/<kind>/<name>`` (or ``observed/...``) -> (site, kind, name).

    Parts the key does not have are ""; a key outside both spaces raises ``ValueError``.
    """
    for space in (DESIRED, OBSERVED):
        if key.startswith(space):
            site, _, rest = key[len(space) :].partition("/")
            kind, _, name = rest.partition("/")
            return site, kind, name
    raise ValueError(f"{key!r} is not a desired or observed object key")


def split_family(key: str) -> tuple[str, str]:
    """``sites/edge-1`` -> (``sites/``, ``edge-1``): a key's family prefix and the rest."""
    family, sep, rest = key.partition("/")
    return family + sep, rest


def name_in(prefix: str, key: str) -> str:
    """What follows ``prefix`` in ``key`` (a site id under ``sites/``, a serial under
    ``pki/revoked/``, ...); ``ValueError`` when ``key`` is not under ``prefix``."""
    if not key.startswith(prefix):
        raise ValueError(f"{key!r} is not under {prefix!r}")
    return key[len(prefix) :]
