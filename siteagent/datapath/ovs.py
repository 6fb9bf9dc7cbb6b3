"""Open vSwitch as the data-path profile sees it: read, and changed, through ``ovsdbapp``.

The switch is driven as Neutron drives it: ``ovsdbapp`` transactions against
``ovsdb-server`` (each waits until ``ovs-vswitchd`` has applied it); OpenFlow flows go
through ``ovs-ofctl`` on the bridge's management socket in the OVS run directory.

Invariant: Meridian touches only what it owns. Bridges and ports it creates carry
``external_ids:meridian-owner=meridian``; the ``other_config`` keys it set are listed in
the switch's ``external_ids:meridian-other-config``, so a key it no longer wants is
removed and a key it never set is left alone. Bridges, ports and keys of others are read
(to refuse clashes) and never written. Every ``ovsdbapp``/OS failure is translated here:
an unreachable switch is ``Temporary``, a refused change ``HardwareError``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ovsdbapp.backend.ovs_idl import connection as ovs_connection
from ovsdbapp.schema.open_vswitch import impl_idl

from siteagent import errors
from siteagent.datapath import profile as dp

OWNER_KEY = "meridian-owner"
OWNER = "meridian"
MANAGED_KEYS = "meridian-other-config"
_TYPES = {"internal": "internal", "patch": "patch", "vhost-user": "dpdkvhostuserclient"}


@dataclass(frozen=True, slots=True)
class PortState:
    name: str
    bridge: str
    owned: bool
    type: str
    options: dict[str, str] = field(default_factory=dict)
    error: str = ""
    """What vswitchd said when it could not create the interface."""


@dataclass(frozen=True, slots=True)
class BridgeState:
    name: str
    owned: bool
    datapath_type: str
    ports: dict[str, PortState] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SwitchState:
    other_config: dict[str, str]
    managed_keys: frozenset[str]
    bridges: dict[str, BridgeState]
    datapath_types: frozenset[str] = frozenset()
    """The datapath types this vswitchd supports (``netdev``, ``system``)."""

    def port(self, name: str) -> PortState | None:
        for bridge in self.bridges.values():
            if name in bridge.ports:
                return bridge.ports[name]
        return None


def interface_attrs(port: dp.OvsPort) -> dict[str, Any]:
    """The Interface columns a declared port stands for."""
    attrs: dict[str, Any] = {"type": _TYPES.get(port.type, "")}
    if port.type == "patch":
        attrs["options"] = {"peer": port.peer}
    elif port.type == "vhost-user":
        attrs["options"] = {"vhost-server-path": port.path}
    else:
        attrs["options"] = {}
    return attrs


class OvsSwitch:
    """One ``ovsdb-server`` (``remote``, e.g. ``unix:/run/openvswitch/db.sock``)."""

    def __init__(self, remote: str, *, rundir: str = "", timeout: float = 30.0) -> None:
        self.remote = remote
        self.rundir = rundir or _rundir_of(remote)
        self.timeout = timeout
        self._api: impl_idl.OvsdbIdl | None = None

    def close(self) -> None:
        if self._api is not None:
            self._api.ovsdb_connection.stop()
            self._api = None

    # -- reading -----------------------------------------------------------------------

    def state(self) -> SwitchState:
        api = self._connect()
        with _translated("read the switch"):
            root = api.db_list(
                "Open_vSwitch", columns=["other_config", "external_ids", "datapath_types"]
            ).execute(check_error=True)[0]
            bridges = api.db_list(
                "Bridge", columns=["name", "external_ids", "datapath_type", "ports"]
            ).execute(check_error=True)
            ports = api.db_list(
                "Port", columns=["_uuid", "name", "external_ids", "interfaces"]
            ).execute(check_error=True)
            ifaces = api.db_list("Interface", columns=["name", "type", "options", "error"]).execute(
                check_error=True
            )
        by_iface = {i["name"]: i for i in ifaces}
        by_uuid = {p["_uuid"]: p for p in ports}
        found: dict[str, BridgeState] = {}
        for row in bridges:
            states = {}
            for ref in row["ports"]:
                port = by_uuid.get(ref)
                if port is None:
                    continue
                iface = by_iface.get(port["name"], {})
                states[port["name"]] = PortState(
                    name=port["name"],
                    bridge=row["name"],
                    owned=port["external_ids"].get(OWNER_KEY) == OWNER,
                    type=iface.get("type", ""),
                    options=dict(iface.get("options", {})),
                    error=_first(iface.get("error")),
                )
            found[row["name"]] = BridgeState(
                name=row["name"],
                owned=row["external_ids"].get(OWNER_KEY) == OWNER,
                datapath_type=row["datapath_type"] or "system",
                ports=states,
            )
        managed = root["external_ids"].get(MANAGED_KEYS, "")
        return SwitchState(
            other_config=dict(root["other_config"]),
            managed_keys=frozenset(k for k in managed.split(",") if k),
            bridges=found,
            datapath_types=frozenset(root.get("datapath_types") or ()),
        )

    def flows_differ(self, bridge: str, flows: tuple[str, ...]) -> bool:
        """Whether the bridge's OpenFlow table differs from ``flows`` (``diff-flows``)."""
        return bool(self._ofctl_flows("diff-flows", bridge, flows).strip())

    # -- writing -----------------------------------------------------------------------

    def apply(self, config: dp.OvsConfig, current: SwitchState) -> list[str]:
        """Converge the owned part of the switch to ``config``; returns what changed.

        ``current`` must have been checked (no clash with what others own).
        """
        api = self._connect()
        changes: list[str] = []
        owner = {OWNER_KEY: OWNER}
        with _translated("change the switch"), api.transaction(check_error=True) as txn:
            changes += self._other_config(api, txn, config.other_config, current)
            wanted = {b.name for b in config.bridges}
            for name, state in current.bridges.items():
                if state.owned and name not in wanted:
                    txn.add(api.del_br(name))
                    changes.append(f"bridge {name} removed")
            for bridge in config.bridges:
                have = current.bridges.get(bridge.name)
                if have is None or have.datapath_type != bridge.datapath_type:
                    txn.add(api.add_br(bridge.name, datapath_type=bridge.datapath_type))
                    txn.add(api.db_set("Bridge", bridge.name, ("external_ids", owner)))
                    txn.add(api.db_set("Port", bridge.name, ("external_ids", owner)))
                    changes.append(f"bridge {bridge.name} ({bridge.datapath_type}) set")
                changes += self._ports(api, txn, bridge, have)
        for bridge in config.bridges:
            if bridge.flows and self.flows_differ(bridge.name, bridge.flows):
                self._ofctl_flows("replace-flows", bridge.name, bridge.flows)
                changes.append(f"bridge {bridge.name}: flows replaced")
        return changes

    def remove_owned(self, current: SwitchState) -> list[str]:
        """Remove every owned bridge and every ``other_config`` key Meridian set."""
        return self.apply(dp.OvsConfig(), current)

    def _other_config(
        self, api: impl_idl.OvsdbIdl, txn: Any, wanted: dict[str, str], current: SwitchState
    ) -> list[str]:
        changes = []
        stale = sorted((current.managed_keys - set(wanted)) & set(current.other_config))
        if stale:
            txn.add(api.db_remove("Open_vSwitch", ".", "other_config", *stale))
            changes += [f"other_config:{k} removed" for k in stale]
        differ = {k: v for k, v in wanted.items() if current.other_config.get(k) != v}
        if differ:
            txn.add(api.db_set("Open_vSwitch", ".", ("other_config", differ)))
            changes += [f"other_config:{k}={v}" for k, v in sorted(differ.items())]
        keys = ",".join(sorted(wanted))
        if current.managed_keys != frozenset(wanted):
            txn.add(api.db_set("Open_vSwitch", ".", ("external_ids", {MANAGED_KEYS: keys})))
        return changes

    @staticmethod
    def _ports(
        api: impl_idl.OvsdbIdl, txn: Any, bridge: dp.OvsBridge, have: BridgeState | None
    ) -> list[str]:
        changes = []
        existing = have.ports if have is not None else {}
        wanted = {p.name for p in bridge.ports}
        for name, state in existing.items():
            if state.owned and name not in wanted and name != bridge.name:
                txn.add(api.del_port(name, bridge=bridge.name))
                changes.append(f"port {name} removed")
        for port in bridge.ports:
            attrs = interface_attrs(port)
            had = existing.get(port.name)
            if had is None:
                txn.add(api.add_port(bridge.name, port.name, **attrs))
                txn.add(api.db_set("Port", port.name, ("external_ids", {OWNER_KEY: OWNER})))
                changes.append(f"port {port.name} ({port.type}) added to {bridge.name}")
            elif had.type != attrs["type"] or had.options != attrs["options"]:
                txn.add(api.db_set("Interface", port.name, *attrs.items()))
                changes.append(f"port {port.name} ({port.type}) updated")
        return changes

    # -- helpers -----------------------------------------------------------------------

    def _connect(self) -> impl_idl.OvsdbIdl:
        if self._api is None:
            with _translated(f"connect to {self.remote}", temporary=True):
                idl = ovs_connection.OvsdbIdl.from_server(self.remote, "Open_vSwitch")
                conn = ovs_connection.Connection(idl, timeout=self.timeout)
                self._api = impl_idl.OvsdbIdl(conn)
        return self._api

    def _ofctl_flows(self, command: str, bridge: str, flows: tuple[str, ...]) -> str:
        """``ovs-ofctl <command> <bridge> <file of flows>`` (it reads flows from a file)."""
        with tempfile.NamedTemporaryFile("w", prefix="meridian-flows-", suffix=".txt") as file:
            file.write("\n".join(flows) + "\n")
            file.flush()
            return self._ofctl(command, bridge, file.name)

    def _ofctl(self, *args: str) -> str:
        env = {**os.environ, "OVS_RUNDIR": self.rundir}
        argv = ["ovs-ofctl", f"--timeout={int(self.timeout)}", *args]
        try:
            done = subprocess.run(
                argv,
                env=env,
                capture_output=True,
                text=True,
                timeout=self.timeout + 5,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise errors.Temporary(f"{' '.join(argv)}: {exc}") from exc
        if done.returncode not in (0, 2) or (done.returncode == 2 and args[0] != "diff-flows"):
            raise errors.HardwareError(f"{' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout


def _rundir_of(remote: str) -> str:
    if remote.startswith("unix:"):
        return os.path.dirname(remote[len("unix:") :])
    return "/var/run/openvswitch"


def _first(value: object) -> str:
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value or "")


@contextmanager
def _translated(doing: str, *, temporary: bool = False) -> Iterator[None]:
    """ovsdbapp and OS errors become ours: a lost switch is Temporary, a refusal is not."""
    try:
        yield
    except errors.SiteAgentError:
        raise
    except (OSError, TimeoutError) as exc:
        raise errors.Temporary(f"OVS: cannot {doing}: {exc}", retry_after=2.0) from exc
    except Exception as exc:  # ovsdbapp raises plain RuntimeError/TimeoutException
        message = f"OVS: cannot {doing}: {exc or type(exc).__name__}"
        if temporary or "timeout" in type(exc).__name__.lower():
            raise errors.Temporary(message, retry_after=2.0) from exc
        raise errors.HardwareError(message) from exc
