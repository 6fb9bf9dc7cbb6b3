"""The site agent's settings: frozen dataclasses from a TOML file and the environment.

Validated in one place; ``SettingsError`` lists every problem with its dotted path.
Environment overrides: ``MERIDIAN_AGENT_<SECTION>__<FIELD>`` (``MERIDIAN_AGENT_SITE_ID``
for top-level fields). OpenStack credentials are NOT here: the openstack driver takes them
from the site's own ``clouds.yaml`` / ``OS_*`` (invariant 6: they never leave the site).
"""

from __future__ import annotations

import functools
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic

from replication import throttle
from siteagent import errors


@dataclass(frozen=True, slots=True)
class TlsSettings:
    ca_file: str = ""
    """The Meridian CA; the broker's certificate must chain to it."""
    cert_file: str = ""
    """This site's client certificate (``meridian pki issue-site``)."""
    key_file: str = ""
    """Its private key (mode 0600)."""


@dataclass(frozen=True, slots=True)
class SessionSettings:
    brokers: tuple[str, ...] = ("127.0.0.1:7443",)
    """host:port of broker replicas; the agent moves to the next when one fails."""
    connect_timeout: Annotated[float, pydantic.Field(gt=0)] = 15.0
    """Seconds to establish a stream (TLS handshake, Hello) and receive Welcome. Each
    attempt draws its own bound between this and 1.25 times it, so agents that dialled a
    busy replica together do not give up (and dial again) together. Generous on purpose:
    a broker restarting under a thousand agents opens them in turns (a busy replica
    answers at once with a delay to come back after, which the agent honours), and an
    attempt abandoned after its TLS handshake is work the broker did for nothing. The
    price: a replica that accepts connections but is frozen holds the agent this long
    before it moves on to the next one."""
    connect_timeout_max: Annotated[float, pydantic.Field(gt=0)] = 120.0
    """Longest bound on reaching Welcome. Each attempt in a row that ran out of time
    doubles the next one's bound (from ``connect_timeout``) up to this: a broker that
    cannot even finish the handshakes in time is saturated, and giving up sooner would
    only make it handshake again."""
    backoff_initial: float = 0.1
    """First reconnect delay in seconds; doubled per failure, with full jitter."""
    backoff_max: float = 5.0
    """Longest reconnect delay in seconds (after a failure the broker answered or the
    network refused at once)."""
    timeout_backoff_max: Annotated[float, pydantic.Field(gt=0)] = 60.0
    """Longest reconnect delay in seconds after attempts that ran out of time: a timeout
    is a busy broker that could not say so, so the delay keeps doubling past
    ``backoff_max`` (full jitter) while the timeouts go on, and a herd spreads out."""
    missed_acks: int = 3
    """Heartbeat intervals without an ack before the stream is given up as dead."""


@dataclass(frozen=True, slots=True)
class ReconcileSettings:
    reobserve_interval: Annotated[float, pydantic.Field(gt=0)] = 2.0
    """Seconds between re-observations of converged servers (lost out of band, host down)."""


@dataclass(frozen=True, slots=True)
class SimSettings:
    config_file: str = ""
    """YAML describing the simulated hosts; empty = generated from the fields below."""
    hosts: int = 4
    """Generated hosts (when no config_file)."""
    cells: int = 2
    """NUMA cells per generated host."""
    seed: int = 0
    """Seed of the generated site (the same seed gives the same site)."""
    control_file: str = ""
    """Faults for tests (``simcontrol``): failed hosts, objects lost out of band."""


@dataclass(frozen=True, slots=True)
class HardwareSettings:
    compute_host: bool = False
    """This machine is itself one of the site's compute hosts: its own hardware (NUMA
    cells, CPUs, huge pages, VFs, read from sysfs) is added to the inventory as a host that
    placement may pick. Off by default: the agent usually runs on a controller that hosts
    no instances, and an openstack site's hosts come from its Placement."""
    sysfs_root: str = "/"
    """Where sysfs is mounted (a fixture tree in tests)."""
    physnets: dict[str, str] = field(default_factory=dict)
    """Network interface → physical network, for SR-IOV pools."""


@dataclass(frozen=True, slots=True)
class DatapathSettings:
    enabled: bool = False
    """Manage this machine's accelerated data path (huge pages, SR-IOV VFs, OVS) from the
    site's ``datapath`` profile; sysfs is read and written below ``hardware.sysfs_root``."""
    ovsdb: str = ""
    """The OVS database the agent drives (e.g. ``unix:/run/openvswitch/db.sock``); empty =
    no OVS is managed (a profile that configures OVS is refused)."""
    ovs_rundir: str = ""
    """Where ovs-vswitchd keeps bridge management sockets (for flows); empty = the
    directory of ``ovsdb``'s socket."""
    host: str = ""
    """The inventory host whose data path this is; empty = this machine's hostname."""
    profile_file: str = ""
    """A local profile (YAML) applied at start, for sites managed locally; empty = the
    profile comes from the broker (``meridian site datapath set``)."""
    drift_interval: Annotated[float, pydantic.Field(gt=0)] = 10.0
    """Seconds between checks for hand changes (drift) of the applied profile."""


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    address: str = ""
    """The stitching gateway's underlay address with prefix (``192.0.2.10/24``): the local
    end of its VXLAN tunnels, reported to the broker. Empty = this site has no gateway
    (stitched networks refuse it)."""
    device: str = ""
    """The underlay interface the gateway owns (moved into its namespace)."""
    namespace: str = "meridian-gw"
    """The gateway's network namespace (created if missing)."""
    mtu: Annotated[int, pydantic.Field(ge=576, le=65_535)] = 1500
    """The underlay MTU; stitched networks get this minus 50 bytes of VXLAN."""
    next_hop: str = ""
    """Underlay router toward peers beyond the device's subnet ("" = on-link only)."""
    probe_port: Annotated[int, pydantic.Field(ge=1, le=65_535)] = 4800
    """TCP port the gateway answers verify probes on, inside its namespace."""


@dataclass(frozen=True, slots=True)
class ImageSettings:
    dir: str = ""
    """Where this site keeps image files it serves and receives (with the openstack driver:
    where received bytes are staged before they go into Glance); empty = no image service."""
    audit_interval: Annotated[float, pydantic.Field(gt=0)] = 30.0
    """Seconds between audits of the images held (re-hashed and reported to the broker)."""
    upload_rate: Annotated[float, pydantic.Field(ge=0)] = 0.0
    """This site's cap on bytes/s served to other sites, shared by all uploads; 0 = none."""
    download_rate: Annotated[float, pydantic.Field(ge=0)] = 0.0
    """This site's cap on bytes/s received from other sites, shared by all copies; 0 = none."""
    upload_windows: tuple[Annotated[str, pydantic.AfterValidator(throttle.check_window)], ...] = ()
    """Caps by time of day on what this site serves, ``"HH:MM-HH:MM=<bytes/s>"`` (UTC,
    e.g. ``"08:00-20:00=10485760"``); inside a window it replaces ``upload_rate``."""
    download_windows: tuple[
        Annotated[str, pydantic.AfterValidator(throttle.check_window)], ...
    ] = ()
    """The same for what this site receives (replaces ``download_rate`` inside a window)."""
    direct_listen: str = ""
    """host:port where this site serves its verified images to other sites directly
    (mTLS; its certificate must be issued to serve). Empty: behind NAT, relay only."""
    direct_address: str = ""
    """The address other sites dial for ``direct_listen`` (empty: ``direct_listen``)."""
    grant_public_key_file: str = ""
    """The broker's transfer-grant public key (PEM), required with ``direct_listen``."""
    piece_size: Annotated[int, pydantic.Field(ge=1 << 16, le=1 << 26)] = 4 << 20
    """Bytes per piece of the piece lists this site reports for the images it is the source
    of (swarming; larger where a list would pass ``replication.pieces.MAX_RECORDED``)."""
    dial_peers: bool = True
    """False: this site reaches no other site, only the brokers (egress to them alone):
    it never swarms nor pulls directly, every copy to it goes through the relay."""


@dataclass(frozen=True, slots=True)
class OpenStackSettings:
    cloud: str = ""
    """Cloud name in the site's clouds.yaml (or OS_CLOUD); empty = OS_* variables."""


@dataclass(frozen=True, slots=True)
class AgentSettings:
    site_id: str = ""
    """The site this agent speaks for; must match its certificate's URI SAN."""
    driver: Literal["sim", "openstack"] = "sim"
    """Which site driver converges desired state."""
    tls: TlsSettings = field(default_factory=TlsSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    sim: SimSettings = field(default_factory=SimSettings)
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    hardware: HardwareSettings = field(default_factory=HardwareSettings)
    openstack: OpenStackSettings = field(default_factory=OpenStackSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    datapath: DatapathSettings = field(default_factory=DatapathSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)


ENV_PREFIX = "MERIDIAN_AGENT_"
LISTS = {"brokers"}


def from_env(env: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        *sections, leaf = name[len(ENV_PREFIX) :].lower().split("__")
        node = data
        for part in sections:
            node = node.setdefault(part, {})
        node[leaf] = raw.split(",") if leaf in LISTS else raw
    return data


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@functools.cache
def _adapter() -> pydantic.TypeAdapter[AgentSettings]:
    """Built once per process (~20 ms): a swarm loads thousands of agents' settings."""
    return pydantic.TypeAdapter(AgentSettings)


def load(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> AgentSettings:
    """File, then environment, then explicit overrides; validated together."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise errors.SettingsError([f"{path}: cannot read: {exc.strerror}"]) from exc
        except tomllib.TOMLDecodeError as exc:
            raise errors.SettingsError([f"{path}: not valid TOML: {exc}"]) from exc
    data = merge(merge(data, from_env(os.environ if env is None else env)), overrides or {})
    problems: list[str] = []
    try:
        settings = _adapter().validate_python(data, extra="forbid")
    except pydantic.ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise errors.SettingsError(problems) from exc
    if not settings.site_id:
        problems.append("site_id: required (the site this agent speaks for)")
    if settings.session.connect_timeout_max < settings.session.connect_timeout:
        problems.append(
            "session.connect_timeout_max: must be at least session.connect_timeout "
            f"({settings.session.connect_timeout})"
        )
    if not settings.session.brokers:
        problems.append("session.brokers: at least one broker host:port")
    for name in ("ca_file", "cert_file", "key_file"):
        if not getattr(settings.tls, name):
            problems.append(f"tls.{name}: required (issue with meridian pki issue-site)")
    if problems:
        raise errors.SettingsError(problems)
    return settings
