"""A network lab of namespaces for data-plane tests and benchmarks (root only).

    lab = Lab.create(sites=["s0", "s1", "s2"])      # a WAN namespace with a bridge, and
    gw = lab.gateway("s0")                          # per site an underlay veth onto it
    lab.vm("s0", vni, address, mtu)                 # a "VM" namespace on the site segment
    lab.cleanup()                                   # every namespace and link it made

Everything lives in namespaces whose names start with the lab's random token; addresses
come from 198.18.0.0/15 (set aside for benchmarking, RFC 2544) and exist only inside
those namespaces. No traffic leaves them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from broker.stitching import render
from siteagent.datapath import netlink, spec
from siteagent.datapath.gateway import Gateway

NOT_ROOT = (
    "the netns tests build network namespaces, veths, bridges and VXLAN devices and need "
    "root (CAP_NET_ADMIN): run them as root (CI does), e.g. sudo .venv/bin/pytest -m netns"
)
WAN = "198.18.0"


def is_root() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def lab_for_test(sites: list[str]) -> Iterator[Lab]:
    """A lab of ``sites`` for a test's fixture, cleaned up after it; the test fails
    saying how to run it when not root."""
    if not is_root():
        pytest.fail(NOT_ROOT, pytrace=False)
    made = Lab.create(sites)
    try:
        yield made
    finally:
        made.cleanup()


def sh(*argv: str, ns: str = "", check: bool = True) -> str:
    cmd = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Lab:
    token: str
    sites: list[str]
    wan_mtu: int = 1500
    gateways: dict[str, Gateway] = field(default_factory=dict)

    @classmethod
    def create(cls, sites: list[str], wan_mtu: int = 1500) -> Lab:
        lab = cls(secrets.token_hex(2), sites, wan_mtu)
        sh("ip", "netns", "add", lab.wan)
        sh("ip", "link", "add", "wan", "type", "bridge", ns=lab.wan)
        sh("ip", "link", "set", "wan", "mtu", str(wan_mtu), "up", ns=lab.wan)
        for i in range(len(sites)):
            lab.plug(i)
        return lab

    @property
    def wan(self) -> str:
        return f"mlab{self.token}wan"

    def index(self, site: str) -> int:
        return self.sites.index(site)

    def underlay(self, i: int) -> str:
        return f"ml{self.token}u{i}"

    def plug(self, i: int) -> None:
        """(Re)create site i's underlay veth: one end on the WAN bridge, one in the root."""
        outer, inner = f"ml{self.token}w{i}", self.underlay(i)
        deadline = time.monotonic() + 10  # a removed namespace's veths go asynchronously
        while sh("ip", "link", "show", outer, ns=self.wan, check=False):
            assert time.monotonic() < deadline, f"{outer} outlived its namespace"
            time.sleep(0.05)
        sh("ip", "link", "add", inner, "mtu", str(self.wan_mtu), "type", "veth", "peer",
           "name", outer, "mtu", str(self.wan_mtu), "netns", self.wan)  # fmt: skip
        sh("ip", "link", "set", outer, "master", "wan", "up", ns=self.wan)

    def endpoint(self, site: str) -> spec.Endpoint:
        i = self.index(site)
        return spec.Endpoint(
            namespace=f"mlab{self.token}gw{i}",
            device=self.underlay(i),
            address=f"{WAN}.{10 + i}/24",
            mtu=self.wan_mtu,
        )

    def gateway(self, site: str) -> Gateway:
        gw = Gateway(self.endpoint(site))
        self.gateways[site] = gw
        return gw

    def endpoints(self) -> dict[str, render.GatewayEndpoint]:
        return {s: render.GatewayEndpoint(s, self.endpoint(s).ip, self.wan_mtu) for s in self.sites}

    def specs(
        self, kind: str, cidr: str, vni: int, sites: list[str], max_mesh: int = 16
    ) -> dict[str, spec.NetworkSpec]:
        mtu = self.wan_mtu - 50
        docs = render.stitch_objects(
            f"net-{vni}", kind, cidr, vni, mtu, sites, self.endpoints(), max_mesh
        )
        return {s: spec.from_json(d) for s, d in docs.items()}

    def vm_ns(self, site: str, vni: int) -> str:
        return f"mlab{self.token}vm{self.index(site)}n{vni}"

    def vm(self, site: str, net: spec.NetworkSpec, address: str, gateway: str = "") -> str:
        """A VM namespace with ``address`` on ``site``'s segment of ``net``; its name."""
        i, ns = self.index(site), self.vm_ns(site, net.vni)
        gw_ns = self.endpoint(site).namespace
        vm_if, port = f"ml{self.token}v{i}n{net.vni % 1000}", f"ml{self.token}p{i}n{net.vni % 1000}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", vm_if, "type", "veth", "peer", "name", port)
        sh("ip", "link", "set", vm_if, "netns", ns)
        sh("ip", "link", "set", port, "netns", gw_ns)
        # what Gateway.attach does, through ip(8): usable while an agent owns the gateway
        sh("ip", "link", "set", port, "master", net.bridge, "mtu", str(net.mtu), "up", ns=gw_ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        # a VM keeps its MAC across rebuilds, as a Neutron port does
        mac = "02:00:" + ":".join(f"{b:02x}" for b in bytes([i]) + net.vni.to_bytes(3, "big"))
        sh("ip", "link", "set", vm_if, "address", mac, "mtu", str(net.mtu), "up", ns=ns)
        sh("ip", "addr", "add", address, "dev", vm_if, ns=ns)
        if gateway:
            sh("ip", "route", "add", "default", "via", gateway, ns=ns)
        return ns

    def namespaces(self) -> list[str]:
        return [n for n in netlink.namespaces() if n.startswith(f"mlab{self.token}")]

    def cleanup(self) -> None:
        for gw in self.gateways.values():
            gw.close()
        for ns in self.namespaces():
            netlink.remove_namespace(ns)
        for i in range(len(self.sites)):  # an underlay never moved into a gateway
            sh("ip", "link", "del", self.underlay(i), check=False)
