"""The one boundary to the kernel's netlink (pyroute2) for the site gateway.

Everything that touches links, addresses, FDB entries, routes and namespaces goes through
``Kernel`` (one namespace each) and the module functions; pyroute2's ``NetlinkError`` and
``OSError`` are translated here to ``DatapathError`` naming the operation, so nothing
above knows pyroute2. Reads return plain values; writes are single netlink requests, so
the gateway above can make every step idempotent by reading first.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from siteagent.errors import DatapathError

ZERO_MAC = "00:00:00:00:00:00"


@contextlib.contextmanager
def translated(op: str) -> Iterator[None]:
    try:
        yield
    except NetlinkError as exc:
        raise DatapathError(op, f"{exc.args[-1] if exc.args else exc} (errno {exc.code})") from exc
    except OSError as exc:
        raise DatapathError(op, str(exc)) from exc


def namespaces() -> list[str]:
    with translated("list namespaces"):
        return sorted(netns.listnetns())


def _ip(op: str, *argv: str) -> None:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if done.returncode:
        raise DatapathError(op, done.stderr.strip() or f"ip exited {done.returncode}")


def create_namespace(name: str) -> None:
    if name not in namespaces():
        _ip(f"create namespace {name}", "netns", "add", name)


def remove_namespace(name: str) -> None:
    if name in namespaces():
        _ip(f"remove namespace {name}", "netns", "del", name)


def socket_in(
    namespace: str, kind: int, proto: int = 0, family: int = socket.AF_NETLINK
) -> socket.socket:
    """A socket inside ``namespace``, made by a short-lived thread that entered it
    (``setns`` is per thread). No process is forked: a fork of the agent would share its
    signal wake-up descriptor, and the child's end would read as a signal to the parent."""
    made: dict[str, Any] = {}

    def enter() -> None:
        try:
            netns.setns(namespace, flags=0)
            made["sock"] = socket.socket(family, kind, proto)
        except OSError as exc:
            made["error"] = exc

    worker = threading.Thread(target=enter, name=f"netns-{namespace}")
    worker.start()
    worker.join()
    if "error" in made:
        raise DatapathError(f"enter namespace {namespace}", str(made["error"]))
    sock: socket.socket = made["sock"]
    return sock


def sysctl(namespace: str, key: str, value: str) -> None:
    """Set a per-namespace sysctl (``net.ipv4.ip_forward``) inside ``namespace``."""
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, "sysctl", "-qw", f"{key}={value}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise DatapathError(f"sysctl {key} in {namespace}", done.stderr.strip())


def enable_gro(namespace: str, device: str) -> bool:
    """Generic receive offload on ``device``: tunnel packets are coalesced before they are
    decapsulated (veths have it off by default, NICs on). False when ethtool refused."""
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, "ethtool", "-K", device, "gro", "on"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0


def _attr(msg: Any, name: str) -> Any:
    return msg.get(name)


class Kernel:
    """Netlink requests inside one namespace (created if missing); ``None`` = this one."""

    def __init__(self, namespace: str | None = None) -> None:
        self.namespace = namespace
        if namespace:
            create_namespace(namespace)
            sock = socket_in(namespace, socket.SOCK_DGRAM)
        with translated(f"open namespace {namespace}"):
            self._ipr = IPRoute(use_socket=sock) if namespace else IPRoute()

    def close(self) -> None:
        self._ipr.close()

    def links(self) -> dict[str, dict[str, Any]]:
        """Every link by name: index, kind, master index, mtu (VXLAN: port, local)."""
        out = {}
        with translated("list links"):
            for msg in self._ipr.link("dump"):
                info = _attr(msg, "IFLA_LINKINFO")
                kind = info.get("IFLA_INFO_KIND") if info is not None else None
                data = info.get("IFLA_INFO_DATA") if kind == "vxlan" else None
                out[_attr(msg, "IFLA_IFNAME")] = {
                    "index": msg["index"],
                    "kind": kind or "",
                    "master": _attr(msg, "IFLA_MASTER") or 0,
                    "mtu": _attr(msg, "IFLA_MTU"),
                    "port": data.get("IFLA_VXLAN_PORT") if data is not None else None,
                    "local": data.get("IFLA_VXLAN_LOCAL") if data is not None else None,
                    "alias": _attr(msg, "IFLA_IFALIAS") or "",
                }
        return out

    def index(self, name: str) -> int | None:
        with translated(f"look up {name}"):
            found = self._ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def _index(self, name: str) -> int:
        found = self.index(name)
        if found is None:
            raise DatapathError(f"look up {name}", f"no link {name} in {self.namespace}")
        return found

    def add_link(self, name: str, kind: str, **attrs: Any) -> None:
        with translated(f"add {kind} {name}"):
            self._ipr.link("add", ifname=name, kind=kind, **attrs)

    def set_link(self, name: str, **attrs: Any) -> None:
        with translated(f"set {name} {sorted(attrs)}"):
            self._ipr.link("set", index=self._index(name), **attrs)

    def delete_link(self, name: str) -> None:
        found = self.index(name)
        if found is None:
            return
        try:
            self._ipr.link("del", index=found)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:  # gone already (a veth whose peer went)
                raise DatapathError(f"delete {name}", str(exc)) from exc

    def move(self, name: str, namespace: str) -> None:
        with translated(f"move {name} to {namespace}"):
            self._ipr.link("set", index=self._index(name), net_ns_fd=namespace)

    def addresses(self, name: str) -> set[str]:
        with translated(f"addresses of {name}"):
            msgs = self._ipr.get_addr(index=self._index(name), family=2)
        return {f"{_attr(m, 'IFA_ADDRESS')}/{m['prefixlen']}" for m in msgs}

    def set_addresses(self, name: str, wanted: set[str]) -> None:
        """Exactly ``wanted`` (CIDR form) on ``name``: add what lacks, drop what is extra."""
        have = self.addresses(name)
        index = self._index(name)
        for cidr in sorted(have - wanted):
            ip, plen = cidr.split("/")
            with translated(f"remove {cidr} from {name}"):
                self._ipr.addr("del", index=index, address=ip, prefixlen=int(plen))
        for cidr in sorted(wanted - have):
            ip, plen = cidr.split("/")
            with translated(f"add {cidr} to {name}"):
                self._ipr.addr("add", index=index, address=ip, prefixlen=int(plen))

    def floods(self, name: str) -> set[str]:
        """The remote addresses a VXLAN device floods to (all-zero MAC FDB entries)."""
        with translated(f"fdb of {name}"):
            msgs = self._ipr.fdb("dump", ifindex=self._index(name))
        return {
            str(_attr(m, "NDA_DST"))
            for m in msgs
            if _attr(m, "NDA_LLADDR") == ZERO_MAC and _attr(m, "NDA_DST")
        }

    def set_floods(self, name: str, wanted: set[str]) -> None:
        have = self.floods(name)
        index = self._index(name)
        for dst in sorted(have - wanted):
            with translated(f"remove flood {dst} from {name}"):
                self._ipr.fdb("del", ifindex=index, lladdr=ZERO_MAC, dst=dst)
        for dst in sorted(wanted - have):
            with translated(f"add flood {dst} to {name}"):
                self._ipr.fdb("append", ifindex=index, lladdr=ZERO_MAC, dst=dst)

    def routes_via(self, device: str) -> dict[str, str]:
        """Gateway routes leaving by ``device``: destination CIDR → next hop."""
        out = {}
        with translated(f"routes of {device}"):
            for m in self._ipr.get_routes(family=2, oif=self._index(device)):
                via = _attr(m, "RTA_GATEWAY")
                if via:
                    out[f"{_attr(m, 'RTA_DST') or '0.0.0.0'}/{m['dst_len']}"] = str(via)
        return out

    def set_routes(self, device: str, wanted: dict[str, str]) -> None:
        have = self.routes_via(device)
        index = self._index(device)
        for dst in sorted(set(have) - set(wanted)):
            with translated(f"remove route {dst}"):
                self._ipr.route("del", dst=dst, gateway=have[dst], oif=index)
        for dst, via in sorted(wanted.items()):
            if have.get(dst) != via:
                with translated(f"route {dst} via {via}"):
                    self._ipr.route("replace", dst=dst, gateway=via, oif=index)
