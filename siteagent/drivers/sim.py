"""A simulated OpenStack site: the ``Driver`` for tests and for many sites in one process.

``SimSite`` keeps every object of every kind in memory with its generation, resolves
references like a cloud does (a port's network must exist: a temporary error until it
does), claims hardware for servers through ``simcapacity`` (one NUMA cell of one host;
"no host fits" is permanent until the object changes), honours server group policies,
enforces per-project quota objects, and counts per-project usage. Ids are uuid5 of
site/kind/name, so they are the same on every run.

Invariant 4: ``apply`` of a generation already applied returns the stored status and
changes nothing — no second claim, no second usage count; a higher generation updates
in place, releasing exactly what the previous generation held. A simulated cloud holds
no credentials (invariant 6 holds trivially).

Calls do no work proportional to the site beyond the object touched, except
``inventory`` and ``usage``, which copy the counters; idle sites cost nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from siteagent import errors, models, sim_config
from siteagent.drivers import base, simcontrol, specs
from siteagent.drivers.simcapacity import Capacity, Claim, Need

HOST_STATE = base.HOST_STATE
"""Trait a sim host carries in the inventory while it is failed (value ``down``)."""
_ID_NAMESPACE = uuid.UUID("6f1d3c52-9a0e-5b7e-8d43-2c1a9e6f0b11")
Op = Literal["apply", "observe", "delete"]
_COUNTED = {
    "network": "networks",
    "subnet": "subnets",
    "port": "ports",
    "security_group": "security_groups",
    "server_group": "server_groups",
}


@dataclass(slots=True)
class _Record:
    kind: str
    name: str
    generation: int
    spec: specs.Spec
    status: models.ObjectStatus
    project: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    claim: Claim | None = None
    need: Need | None = None
    polls_left: int = 0


@dataclass(frozen=True, slots=True)
class _Fault:
    temporary: bool
    message: str
    retry_after: float | None


class SimSite:
    """One simulated site; implements ``drivers.base.Driver``."""

    def __init__(self, config: sim_config.SimSiteConfig) -> None:
        self.config = config
        self.site = config.site
        self.capacity = Capacity(config)
        self._objects: dict[tuple[str, str], _Record] = {}
        self._usage: dict[str, dict[str, int]] = {}
        self._faults: dict[tuple[Op, str], deque[_Fault]] = {}
        self._port_owner: dict[str, str] = {}
        self._group_hosts: dict[str, dict[str, str]] = {}
        self._limits: dict[str, tuple[str, specs.QuotaSpec]] = {}
        """Project → (quota object name, its spec)."""
        self.calls = 0
        """Driver calls so far (apply, observe, delete), for tests and benchmarks."""
        self._failed_hosts: set[str] = set()
        self._control: simcontrol.Control | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimSite:
        return cls(sim_config.from_dict(data))

    @classmethod
    def from_yaml(cls, text: str) -> SimSite:
        return cls(sim_config.load_yaml(text))

    @classmethod
    def from_file(cls, path: str | Path) -> SimSite:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise errors.SettingsError([f"{path}: cannot read: {exc.strerror}"]) from exc
        return cls(sim_config.load_yaml(text, source=str(path)))

    @classmethod
    def generated(cls, site_id: str, *, hosts: int = 4, cells: int = 2, seed: int = 0) -> SimSite:
        return cls(sim_config.generated(site_id, hosts=hosts, cells=cells, seed=seed))

    def fail_next(
        self,
        kind: str,
        *,
        temporary: bool = True,
        message: str = "injected failure",
        op: Op = "apply",
        times: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``op`` on ``kind`` raise ``DriverError``."""
        queue = self._faults.setdefault((op, kind), deque())
        queue.extend(_Fault(temporary, message, retry_after) for _ in range(times))

    def fail_host(self, host: str, *, failed: bool = True) -> None:
        """Take ``host`` down (its servers observe FAILED) or bring it back."""
        if failed:
            self._failed_hosts.add(host)
        else:
            self._failed_hosts.discard(host)

    def lose(self, kind: str, name: str) -> bool:
        """The object disappears out of band (deleted behind the agent's back, crashed)."""
        record = self._objects.pop((kind, name), None)
        if record is not None:
            self._release(record)
        return record is not None

    def control(self, path: str | Path) -> None:
        """Read faults from ``path`` whenever it changes (``simcontrol``)."""
        self._control = simcontrol.Control(Path(path))

    def _poll_control(self) -> None:
        found = self._control.poll() if self._control is not None else None
        if found is None:
            return
        self._failed_hosts = set(found.failed_hosts)
        for kind, name in found.lost:
            self.lose(kind, name)

    # -- Driver ----------------------------------------------------------------------

    async def inventory(self) -> models.Inventory:
        self._poll_control()
        inventory = self.capacity.inventory(int(time.time() * 1000))
        if not self._failed_hosts:
            return inventory
        hosts = tuple(
            dataclasses.replace(h, traits={**h.traits, HOST_STATE: "down"})
            if h.name in self._failed_hosts
            else h
            for h in inventory.hosts
        )
        return dataclasses.replace(inventory, hosts=hosts)

    async def usage(self) -> models.Usage:
        return models.Usage(
            projects={
                project: {rc: n for rc, n in amounts.items() if n}
                for project, amounts in self._usage.items()
                if any(amounts.values())
            }
        )

    async def apply(self, obj: models.DesiredObject) -> models.ObjectStatus:
        await self._call("apply", obj.kind, obj.name)
        if obj.deleted:
            return await self.delete(obj.kind, obj.name)
        parsed = specs.parse(obj.kind, obj.name, obj.spec)
        record = self._objects.get((obj.kind, obj.name))
        if record is not None and record.generation >= obj.generation:
            return record.status
        self._check_references(obj.kind, obj.name, parsed)
        if record is not None:
            self._check_update(record, parsed)
        new = _Record(
            obj.kind, obj.name, obj.generation, parsed, _ready(obj, {}), project=_project(parsed)
        )
        if isinstance(parsed, specs.ServerSpec):
            self._apply_server(new, parsed, record)
        else:
            new.usage = {_COUNTED[obj.kind]: 1} if obj.kind in _COUNTED else {}
            self._charge(new, record)
        new.status = _ready(obj, self._outputs(new))
        if new.polls_left:
            new.status = _with_state(new.status, models.ObjectState.PENDING, "building")
        self._objects[(obj.kind, obj.name)] = new
        return new.status

    async def observe(self, kind: str, name: str) -> models.ObjectStatus | None:
        await self._call("observe", kind, name)
        self._poll_control()
        record = self._objects.get((kind, name))
        if record is None:
            return None
        if record.polls_left:
            record.polls_left -= 1
            if not record.polls_left:
                record.status = _with_state(record.status, models.ObjectState.READY, "")
        host = record.status.outputs.get("host", "")
        if host and host in self._failed_hosts:
            return _with_state(record.status, models.ObjectState.FAILED, f"host {host} is down")
        return record.status

    async def delete(self, kind: str, name: str) -> models.ObjectStatus:
        await self._call("delete", kind, name)
        record = self._objects.get((kind, name))
        generation = 0 if record is None else record.generation
        if record is not None:
            self._check_unused(record)
            self._release(record)
            del self._objects[(kind, name)]
        return models.ObjectStatus(kind, name, generation, models.ObjectState.DELETED)

    async def close(self) -> None:
        self._faults.clear()

    # -- internals -------------------------------------------------------------------

    async def _call(self, op: Op, kind: str, name: str) -> None:
        self.calls += 1
        if self.config.latency_s:
            await asyncio.sleep(self.config.latency_s)
        if op != "observe" and not base.is_known(kind):
            raise errors.InvalidSpec("kind", f"unknown kind {kind!r}", kind=kind, name=name)
        queue = self._faults.get((op, kind))
        if queue:
            fault = queue.popleft()
            raise errors.DriverError(
                kind,
                name,
                fault.message,
                temporary=fault.temporary,
                retry_after=fault.retry_after,
            )

    def _get(self, kind: str, name: str, *, wanted_by: tuple[str, str]) -> _Record:
        record = self._objects.get((kind, name))
        if record is None:
            raise errors.DriverError(
                *wanted_by, f"{kind} {name!r} not found", temporary=True, retry_after=1.0
            )
        return record

    def _check_references(self, kind: str, name: str, spec: specs.Spec) -> None:
        who = (kind, name)
        if isinstance(spec, specs.SubnetSpec | specs.PortSpec):
            self._get("network", spec.network, wanted_by=who)
        if isinstance(spec, specs.PortSpec):
            for group in spec.security_groups:
                self._get("security_group", group, wanted_by=who)
        if isinstance(spec, specs.ServerSpec):
            self._get("flavor", spec.flavor, wanted_by=who)
            self._get("image", spec.image, wanted_by=who)
            for port in spec.ports:
                self._get("port", port, wanted_by=who)
                owner = self._port_owner.get(port, name)
                if owner != name:
                    raise errors.DriverError(
                        kind, name, f"port {port!r} is in use by server {owner!r}", temporary=False
                    )
            if spec.keypair is not None:
                self._get("keypair", spec.keypair, wanted_by=who)
            if spec.server_group is not None:
                self._get("server_group", spec.server_group, wanted_by=who)

    def _check_update(self, old: _Record, spec: specs.Spec) -> None:
        """Refuse updates a cloud refuses: moving a bound port, re-wiring a used network."""
        problem = ""
        if isinstance(spec, specs.PortSpec) and isinstance(old.spec, specs.PortSpec):
            moved = (spec.network, spec.vnic_type) != (old.spec.network, old.spec.vnic_type)
            if moved and old.name in self._port_owner:
                problem = "network and vnic_type of a port bound to a server cannot change"
        if isinstance(spec, specs.NetworkSpec) and isinstance(old.spec, specs.NetworkSpec):
            provider = (spec.network_type, spec.physnet, spec.segmentation_id)
            before = (old.spec.network_type, old.spec.physnet, old.spec.segmentation_id)
            if provider != before and any(
                isinstance(r.spec, specs.PortSpec) and r.spec.network == old.name
                for r in self._objects.values()
            ):
                problem = "provider attributes of a network with ports cannot change"
        if problem:
            raise errors.DriverError(old.kind, old.name, problem, temporary=False)

    def _check_unused(self, record: _Record) -> None:
        """Refuse deletes a cloud refuses with 409: the object is still referenced."""
        users: list[str] = []
        for other in self._objects.values():
            spec = other.spec
            on_network = isinstance(spec, specs.SubnetSpec | specs.PortSpec) and (
                record.kind == "network" and spec.network == record.name
            )
            in_group = isinstance(spec, specs.PortSpec) and (
                record.kind == "security_group" and record.name in spec.security_groups
            )
            if on_network or in_group:
                users.append(f"{other.kind} {other.name!r}")
        if record.kind == "port" and record.name in self._port_owner:
            users.append(f"server {self._port_owner[record.name]!r}")
        if users:
            raise errors.DriverError(
                record.kind,
                record.name,
                f"in use by {', '.join(sorted(users)[:3])}",
                temporary=True,
                retry_after=1.0,
            )

    def _need(self, record: _Record, spec: specs.ServerSpec) -> Need:
        who = (record.kind, record.name)
        flavor = self._get("flavor", spec.flavor, wanted_by=who).spec
        assert isinstance(flavor, specs.FlavorSpec)
        vfs: dict[str, int] = {}
        for port_name in spec.ports:
            port = self._get("port", port_name, wanted_by=who).spec
            assert isinstance(port, specs.PortSpec)
            if not port.needs_vf:
                continue
            network = self._get("network", port.network, wanted_by=who).spec
            assert isinstance(network, specs.NetworkSpec)
            if network.physnet is None:
                raise errors.DriverError(
                    *who,
                    f"port {port_name!r} is {port.vnic_type} but network {port.network!r} "
                    "has no physical network: binding failed",
                    temporary=False,
                )
            vfs[network.physnet] = vfs.get(network.physnet, 0) + 1
        return Need(
            vcpus=flavor.vcpus,
            dedicated=flavor.dedicated,
            memory_mb=flavor.ram_mb,
            page_size=flavor.page_size,
            vfs=vfs,
        )

    def _apply_server(self, new: _Record, spec: specs.ServerSpec, old: _Record | None) -> None:
        need = self._need(new, spec)
        new.usage = {"instances": 1, "cores": need.vcpus, "ram_mb": need.memory_mb}
        self._check_quota(new, old)
        self._poll_control()
        if spec.host is not None and spec.host in self._failed_hosts:
            # Nova's answer for a forced host whose compute service is down
            raise errors.DriverError(
                new.kind, new.name, f"the planned host {spec.host} is down", temporary=False
            )
        if old is not None:
            self._release(old)
        only, avoid = self._group_constraint(new.name, spec.server_group)
        if spec.host is not None:  # the broker planned this host: place there or nowhere
            only = {spec.host} if only is None or spec.host in only else set()
        kept = old.claim if old is not None and old.need == need else None
        if kept is not None and spec.host not in (None, self.capacity.host_name(kept)):
            kept = None  # the broker moved it to another host
        # nothing about its resources changed: it stays where it is
        claim = kept if kept is not None else self.capacity.place(need, only=only, avoid=avoid)
        if claim is None:
            if old is not None:
                self._hold(old)
            where = f" on the planned host {spec.host}" if spec.host is not None else ""
            raise errors.DriverError(
                new.kind,
                new.name,
                f"no host fits{where}: needs {need.describe()}",
                temporary=False,
            )
        new.claim = claim
        new.need = need
        new.polls_left = self.config.build_polls
        self._hold(new)

    def _group_constraint(self, server: str, group: str | None) -> tuple[set[str] | None, set[str]]:
        if group is None:
            return None, set()
        record = self._objects[("server_group", group)]
        assert isinstance(record.spec, specs.ServerGroupSpec)
        peers = {h for s, h in self._group_hosts.get(group, {}).items() if s != server}
        if record.spec.policy == "affinity" and peers:
            return peers, set()
        if record.spec.policy == "anti-affinity":
            return None, peers
        return None, set()  # soft policies never block placement

    def _check_quota(self, new: _Record, old: _Record | None) -> None:
        if new.project not in self._limits:
            return
        limits = self._limits[new.project][1].limits
        used = self._usage.get(new.project, {})
        held = old.usage if old is not None else {}
        for rc, amount in new.usage.items():
            limit = limits.get(rc, -1)
            after = used.get(rc, 0) - held.get(rc, 0) + amount
            if 0 <= limit < after and amount > held.get(rc, 0):
                raise errors.DriverError(
                    new.kind,
                    new.name,
                    f"quota exceeded for {rc}: {after} of {limit} in project {new.project!r}",
                    temporary=False,
                )

    def _charge(self, new: _Record, old: _Record | None) -> None:
        self._check_quota(new, old)
        if old is not None:
            self._release(old)
        self._hold(new)

    def _hold(self, record: _Record) -> None:
        amounts = self._usage.setdefault(record.project, {})
        for rc, n in record.usage.items():
            amounts[rc] = amounts.get(rc, 0) + n
        spec = record.spec
        if isinstance(spec, specs.QuotaSpec):
            self._limits[spec.project] = (record.name, spec)
        if record.claim is not None and isinstance(spec, specs.ServerSpec):
            self.capacity.take(record.claim)
            for port in spec.ports:
                self._port_owner[port] = record.name
            if spec.server_group is not None:
                members = self._group_hosts.setdefault(spec.server_group, {})
                members[record.name] = self.capacity.host_name(record.claim)

    def _release(self, record: _Record) -> None:
        amounts = self._usage.get(record.project, {})
        for rc, n in record.usage.items():
            amounts[rc] = amounts.get(rc, 0) - n
        spec = record.spec
        if (
            isinstance(spec, specs.QuotaSpec)
            and self._limits.get(spec.project, ("",))[0] == record.name
        ):
            del self._limits[spec.project]
        if record.claim is not None and isinstance(spec, specs.ServerSpec):
            self.capacity.give(record.claim)
            for port in spec.ports:
                self._port_owner.pop(port, None)
            if spec.server_group is not None:
                self._group_hosts.get(spec.server_group, {}).pop(record.name, None)

    def _outputs(self, record: _Record) -> dict[str, str]:
        object_id = uuid.uuid5(_ID_NAMESPACE, f"{self.site}/{record.kind}/{record.name}")
        outputs = {"id": str(object_id)}
        if record.claim is not None:
            outputs["host"] = self.capacity.host_name(record.claim)
            outputs["numa_cell"] = str(self.capacity.cell_id(record.claim))
            if record.claim.pages is not None:
                outputs["page_size_kb"] = str(record.claim.pages[0])
        if isinstance(record.spec, specs.ServerSpec) and record.spec.role is not None:
            outputs["role"] = record.spec.role
        if record.kind == "port":
            outputs["mac_address"] = "fa:16:3e:" + ":".join(f"{b:02x}" for b in object_id.bytes[:3])
        return outputs


def _project(spec: specs.Spec) -> str:
    return getattr(spec, "project", "")


def _ready(obj: models.DesiredObject, outputs: dict[str, str]) -> models.ObjectStatus:
    return models.ObjectStatus(
        obj.kind, obj.name, obj.generation, models.ObjectState.READY, outputs=outputs
    )


def _with_state(
    status: models.ObjectStatus, state: models.ObjectState, message: str
) -> models.ObjectStatus:
    return models.ObjectStatus(
        status.kind,
        status.name,
        status.observed_generation,
        state,
        message,
        outputs=status.outputs,
    )
