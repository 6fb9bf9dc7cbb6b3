"""Stand-in "VMs" for data-path tests: a network namespace each, on a veth pair.

The host end (``dev``) is what a test attaches to a bridge; the namespace end is ``eth0``
with ``address``. TX checksum offload is turned off inside the namespace: the userspace
(netdev) datapath does not fill checksums in, and TCP would be dropped without it.
Everything made here is removed by ``remove`` (deleting the namespace deletes its veth).
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass


def run(*argv: str, timeout: float = 30) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Vm:
    ns: str
    dev: str
    address: str
    """With its prefix length, e.g. 10.77.0.1/24."""

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    def exec(self, *argv: str, timeout: float = 30) -> str:
        return run("ip", "netns", "exec", self.ns, *argv, timeout=timeout)

    def remove(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.dev], capture_output=True, check=False)


def make_vm(ns: str, dev: str, address: str, *, offload_off: bool = True) -> Vm:
    vm = Vm(ns, dev, address)
    vm.remove()
    run("ip", "netns", "add", ns)
    try:
        run("ip", "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "link", "set", dev, "up")
        vm.exec("ip", "addr", "add", address, "dev", "eth0")
        vm.exec("ip", "link", "set", "eth0", "up")
        vm.exec("ip", "link", "set", "lo", "up")
        if offload_off:
            vm.exec("ethtool", "-K", "eth0", "tx", "off")
    except Exception:
        vm.remove()
        raise
    return vm


def iperf(server: Vm, client: Vm, *, seconds: float = 2.0, attempts: int = 3) -> float:
    """TCP throughput from ``client`` to ``server`` in bit/s (iperf3, one stream).

    A run iperf3 reports as failed (the server not listening yet, a control connection
    refused) is tried again, up to ``attempts`` times; the last error is raised.
    """
    error = ""
    for _ in range(attempts):
        proc = subprocess.Popen(
            ["ip", "netns", "exec", server.ns, "iperf3", "-s", "-1", "-B", server.ip],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.3)  # let the server bind
            done = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    client.ns,
                    "iperf3",
                    "-c",
                    server.ip,
                    "-t",
                    str(seconds),
                    "-J",
                ],
                capture_output=True,
                text=True,
                timeout=seconds + 30,
                check=False,
            )
            try:
                result = json.loads(done.stdout)
            except ValueError:
                error = done.stderr.strip() or done.stdout.strip()
                continue
            received = result.get("end", {}).get("sum_received", {}).get("bits_per_second")
            if received is not None:
                return float(received)
            error = str(result.get("error", "no sum_received in iperf3's report"))
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    raise RuntimeError(f"iperf3 {client.ns} → {server.ns}: {error}")
