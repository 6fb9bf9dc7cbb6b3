"""The broker's settings: frozen dataclasses, loaded from a TOML file and the environment.

Every field has a default that runs a local replica; ``load`` validates everything in one
place and raises ``SettingsError`` listing each problem with its dotted path
(``gateway.listen: ...``). Environment variables override the file:
``MERIDIAN_<SECTION>__<FIELD>`` (e.g. ``MERIDIAN_ETCD__ENDPOINTS=host1:2379,host2:2379``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic

from broker import errors
from quota.models import RESOURCE_CLASSES


@dataclass(frozen=True, slots=True)
class EtcdSettings:
    endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    """host:port of every etcd member; the client fails over between them."""
    root: str = "/meridian/v1/"
    """Key prefix under which all of Meridian's state lives."""
    ca_file: str = ""
    """CA bundle to verify etcd's server certificate; empty = plain-text etcd."""
    cert_file: str = ""
    """Client certificate for etcd (--client-cert-auth)."""
    key_file: str = ""
    """Client key for etcd."""
    timeout: float = 2.0
    """Seconds before one etcd call is abandoned (and the API answers 503)."""
    threads: int = 8
    """Size of the thread pool the synchronous etcd client runs on."""
    client: Literal["async", "threaded"] = "threaded"
    """Which etcd client the broker uses: "threaded" (cslab-etcd3 on the thread pool
    above; the default) or "async" (grpc.aio on the event loop, ``broker.store.etcdaio``:
    a 5x faster fan-in herd; not the default until the e2e suite and the full-size
    failover benchmark pass on it again -- see docs/design-seams.md)."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    ca_file: str = ""
    """The Meridian CA that signed every agent's and broker's certificate."""
    cert_file: str = ""
    """This replica's server certificate (issued by ``meridian pki issue-broker``)."""
    key_file: str = ""
    """Its private key (mode 0600)."""
    trust_domain: str = "meridian.local"
    """SPIFFE trust domain of site identities: spiffe://<trust-domain>/site/<id>."""


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    listen: str = "127.0.0.1:7443"
    """host:port of the mTLS gRPC server for agent streams."""
    heartbeat_interval: float = 1.0
    """Seconds between agent heartbeats (told to agents in Welcome)."""
    max_message_bytes: int = 4 * 1024 * 1024
    """Largest message accepted on an agent stream; larger ones close the stream."""
    hello_timeout: float = 10.0
    """Seconds an agent has to send Hello after connecting."""
    handshake_timeout: Annotated[float, pydantic.Field(gt=0)] = 30.0
    """Seconds a connection may take to finish its TLS handshake before it is dropped
    (unauthenticated until then). Above the agents' own ``connect_timeout`` (15 s), so
    a handshake queued behind a connect storm is not dropped while its agent waits."""
    max_opening_streams: Annotated[int, pydantic.Field(ge=1)] = 128
    """Streams this replica opens at once (from the stream's arrival until its Welcome and
    desired snapshot are sent). Beyond it a stream is refused at once with
    REFUSAL_UNAVAILABLE and a jittered ``retry_after_ms``, so a connect storm (every
    agent after a restart) queues at the agents instead of starving this replica's event
    loop and etcd pool, where election and lease keepalives must keep running."""
    busy_retry_after: Annotated[float, pydantic.Field(gt=0)] = 1.0
    """Least delay, in seconds, a busy refusal asks for. Refused agents are given the
    next free slots of a queue that starts this far ahead and drains at the rate this
    replica measurably opens streams (gateway/admission.py), each delay jittered within
    its slot, so they come back spread over the time the replica needs for them."""
    lease_ttl: Annotated[int, pydantic.Field(ge=2, le=60)] = 3
    """Seconds of this replica's lease, which holds its live-session records
    (``sitestatus``): a replica that dies takes them with it after this long. Kept alive
    on a thread of its own (``store/keepalive.py``), so a busy event loop does not lose it."""
    busy_retry_after_max: Annotated[float, pydantic.Field(gt=0)] = 120.0
    """Longest delay, in seconds, a busy refusal asks for (a refusal whose slot would lie
    further is told between half this and this, and queued when it comes back)."""

    def __post_init__(self) -> None:
        if self.busy_retry_after_max < self.busy_retry_after:
            raise ValueError(
                f"busy_retry_after_max ({self.busy_retry_after_max}) is below "
                f"busy_retry_after ({self.busy_retry_after})"
            )


@dataclass(frozen=True, slots=True)
class ApiSettings:
    listen: str = "127.0.0.1:8080"
    """host:port of the northbound REST API."""
    tls: bool = True
    """Serve HTTPS with this replica's certificate (``tls.cert_file``/``tls.key_file``,
    issued by ``meridian pki issue-broker``): tokens never cross the network in clear.
    false (plain HTTP) is for tests on loopback only."""
    auth: Literal["dev", "keystone"] = "dev"
    """dev: one generated admin token, loopback only. keystone: Keystone tokens."""
    dev_token_file: str = ""
    """Where the dev-mode admin token is read from (created if missing)."""
    keystone_url: str = ""
    """Keystone v3 endpoint used to validate tokens (keystone mode)."""
    keystone_cloud: str = ""
    """clouds.yaml entry holding the broker's own service credentials (keystone mode)."""
    token_cache_seconds: float = 30.0
    """How long a validated token is trusted before Keystone is asked again."""
    token_cache_size: int = 10_000
    """Most tokens kept in the validation cache."""
    policy_file: str = ""
    """The role policy (TOML, see ``broker/api/policy.py`` and ``deploy/policy/policy.toml``):
    Keystone role -> Meridian role, the admin project, operator scopes. Empty: defaults."""
    max_body_bytes: Annotated[int, pydantic.Field(ge=4096, le=64 * 1024 * 1024)] = 1024 * 1024
    """Largest request body accepted (413 beyond it), counted while it streams in and only
    after the token was validated; an anonymous body is never read at all."""
    idempotency_ttl_s: Annotated[int, pydantic.Field(ge=60, le=30 * 86400)] = 86400
    """How long an ``Idempotency-Key`` of a create request is remembered (an etcd lease):
    a retry within it returns what the first request created."""


@dataclass(frozen=True, slots=True)
class ElectionSettings:
    lease_ttl: Annotated[int, pydantic.Field(ge=2, le=60)] = 2
    """Seconds of the leader lease: a dead leader is replaced about this long after it
    died (etcd raises anything shorter than 2 to its minimum). Its keepalive runs on a
    thread of its own (``store/keepalive.py``): an event loop blocked for seconds (a
    connect storm) keeps its term; etcd not answering for a TTL ends it."""


@dataclass(frozen=True, slots=True)
class HealthSettings:
    down_after: float = 3.0
    """A site with no heartbeat seen for this long goes DOWN (a closed stream: at once)."""
    sweep_interval: float = 0.1
    """Seconds between the site health controller's checks."""


@dataclass(frozen=True, slots=True)
class FailoverSettings:
    max_replacements: Annotated[int, pydantic.Field(ge=1)] = 32
    """Re-placements under way at once, federation-wide, after site or host losses."""
    max_per_site: Annotated[int, pydantic.Field(ge=1)] = 4
    """Re-placements under way at once onto one target site."""


@dataclass(frozen=True, slots=True)
class VnfSettings:
    ready_timeout_s: Annotated[float, pydantic.Field(gt=0)] = 120.0
    """A placed member not READY within this is re-placed (its host, then its site avoided)."""
    max_attempts: Annotated[int, pydantic.Field(ge=1)] = 3
    """Placements of one member before it is given up (the VNF keeps serving, DEGRADED)."""
    restore_retry_s: Annotated[float, pydantic.Field(gt=0)] = 30.0
    """A replacement refused (no capacity, a site briefly DOWN) is asked for again after
    this, for as long as the member stays lost (``restore: auto``)."""


@dataclass(frozen=True, slots=True)
class EventSettings:
    retain_seconds: Annotated[float, pydantic.Field(gt=0)] = 7 * 86400.0
    """Events older than this are trimmed by the leader."""
    retain_count: Annotated[int, pydantic.Field(ge=1)] = 100_000
    """At most this many events are kept; the leader trims the oldest beyond it."""
    trim_interval: Annotated[float, pydantic.Field(gt=0)] = 60.0
    """Seconds between the leader's trims."""


@dataclass(frozen=True, slots=True)
class QuotaSettings:
    headroom: Mapping[str, Annotated[int, pydantic.Field(ge=0)]] = field(default_factory=dict)
    """Per resource class, added to every quota limit pushed to a site (absorbs the lag of
    usage reports; ``[quota.headroom] cores = 2``). 0 keeps sites at the exact remainder."""
    drift_grace: Annotated[float, pydantic.Field(ge=0)] = 5.0
    """Seconds an agent's usage report must differ from the ledger before the difference
    is recorded as drift (so a report racing a commit is not mistaken for one)."""
    reservation_ttl: Annotated[int, pydantic.Field(ge=10, le=86_400)] = 300
    """Seconds a VNF's quota reservation lives unless renewed. The placement controller
    renews it every third of this while the VNF is PLACED, so it only bounds how long the
    quota of a VNF whose record vanished (or of a leaderless federation) stays held."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.headroom) - set(RESOURCE_CLASSES))
        if unknown:
            raise ValueError(
                f"headroom: unknown resource class {', '.join(unknown)} "
                f"(known: {', '.join(RESOURCE_CLASSES)})"
            )


@dataclass(frozen=True, slots=True)
class StitchingSettings:
    supernets: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {"*": ("10.128.0.0/9",)}
    )
    """Where networks without an asked CIDR are carved from, per ``tenant/region``,
    ``tenant``, ``*/region`` or ``*`` (the first key that exists wins)."""
    default_prefixlen: Annotated[int, pydantic.Field(ge=8, le=29)] = 24
    """Size of a network's block when the request names none."""
    external_prefixes: tuple[str, ...] = ()
    """Prefixes held outside Meridian (carrier transport, management): never allocated,
    and an asked-for CIDR overlapping one is refused."""
    vni_range: tuple[int, int] = (10_000, 99_999)
    """VXLAN network identifiers handed out (inclusive; at most 1..16777215)."""
    asn: Annotated[int, pydantic.Field(ge=1, le=4_294_967_295)] = 64512
    """The carrier's AS number: route targets and distinguishers are ``ASN:N``."""
    rt_range: tuple[int, int] = (1, 65_535)
    """The ``N`` of route targets handed out (inclusive)."""
    vlan_range: tuple[int, int] = (100, 3_999)
    """Provider VLAN ids handed out per site and physnet (inclusive)."""
    max_mesh: Annotated[int, pydantic.Field(ge=2)] = 16
    """Networks with up to this many sites are a full mesh of tunnels; bigger ones are
    hub-and-spoke around their first site."""

    def __post_init__(self) -> None:
        for name, (lo, hi), top in (
            ("vni_range", self.vni_range, 16_777_215),
            ("rt_range", self.rt_range, 4_294_967_295),
            ("vlan_range", self.vlan_range, 4_094),
        ):
            if not 1 <= lo <= hi <= top:
                raise ValueError(f"{name}: want 1 <= low <= high <= {top}, got {lo}..{hi}")


@dataclass(frozen=True, slots=True)
class ImageSettings:
    grant_key_file: str = ""
    """Ed25519 private key (PEM) that signs transfer grants; sites that report a direct
    address are then copied from site to site. Empty: every copy goes through the relay."""
    grant_ttl: Annotated[float, pydantic.Field(gt=0)] = 3600.0
    """Seconds a transfer grant stays valid (a copy resumed after that is re-ordered)."""
    resync_interval: Annotated[float, pydantic.Field(gt=0)] = 300.0
    """Seconds between the replication controller's full etcd reads (a safety resync; it
    otherwise decides from what it watches and costs no etcd request)."""
    estimate_rate_mbps: Annotated[float, pydantic.Field(gt=0)] = 100.0
    """MB/s a drill's what-if assumes for an image replication while no replica has
    reported a rate (measured rates are used once there are some)."""


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    name: str = field(default_factory=lambda: f"broker-{os.getpid()}")
    """This replica's name: in events, the leader key and site status."""
    etcd: EtcdSettings = field(default_factory=EtcdSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    election: ElectionSettings = field(default_factory=ElectionSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    events: EventSettings = field(default_factory=EventSettings)
    quota: QuotaSettings = field(default_factory=QuotaSettings)
    stitching: StitchingSettings = field(default_factory=StitchingSettings)
    failover: FailoverSettings = field(default_factory=FailoverSettings)
    vnf: VnfSettings = field(default_factory=VnfSettings)
    images: ImageSettings = field(default_factory=ImageSettings)


ENV_PREFIX = "MERIDIAN_"


def _overlay_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Apply ``MERIDIAN_SECTION__FIELD=value`` variables over the file's values."""
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        leaf = path[-1]
        node[leaf] = raw.split(",") if leaf == "endpoints" else raw
    return data


def load(path: Path | None = None, env: Mapping[str, str] | None = None) -> BrokerSettings:
    """Read ``path`` (TOML, optional), apply the environment, and validate everything."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise errors.SettingsError([f"{path}: cannot read: {exc.strerror}"]) from exc
        except tomllib.TOMLDecodeError as exc:
            raise errors.SettingsError([f"{path}: not valid TOML: {exc}"]) from exc
    data = _overlay_env(data, os.environ if env is None else env)
    try:
        return pydantic.TypeAdapter(BrokerSettings).validate_python(
            data, strict=False, extra="forbid"
        )
    except pydantic.ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise errors.SettingsError(problems) from exc
