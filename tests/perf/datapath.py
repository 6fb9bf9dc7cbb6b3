"""Benchmark: the site data-path profile — apply time, and traffic through a managed bridge.

    python -m tests.perf.datapath [--bridges 8] [--ports 32] [--seconds 3] [--rounds 3] [--quick]

(a) **Apply**: a profile of ``--bridges`` userspace (netdev) bridges × ``--ports``
    internal ports plus ``other_config`` applied through the agent's manager (ovsdbapp,
    ownership marks, one transaction) to a private ovs-vswitchd; then the same profile
    again (idempotent: reads and compares only); then removed. Baseline, same run, same
    switch: the same bridges and ports made by one ``ovs-vsctl`` command line (no
    ownership marks, no checks).
(b) **Throughput**: iperf3 TCP between two "VM" namespaces attached to a Meridian-managed
    netdev bridge (TX checksum offload off in the namespaces), and — the baseline, same
    run — between two namespaces joined by a kernel veth pair; alternated ``--rounds``
    times, medians. The userspace datapath without DPDK is expected to be far slower
    (see the design notes): the ratio is informative.

Root only (namespaces, tap devices). Everything lives in a private OVS and namespaces the
benchmark creates and removes. The last line is one JSON object with ``apply_s`` and
``netdev_vs_veth``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from siteagent.datapath import manager as dpm
from siteagent.datapath import ovs
from siteagent.datapath import profile as dp
from siteagent.hardware import writer
from tests.support import hosttree, vmnet
from tests.support import ovs as ovs_support


def big_profile(tag: str, bridges: int, ports: int) -> dp.Profile:
    return dp.parse(
        {
            "ovs": {
                "other_config": {"pmd-cpu-mask": "0x1", "dpdk-socket-mem": "256"},
                "bridges": [
                    {
                        "name": f"b{tag}{b}",
                        "datapath_type": "netdev",
                        "ports": [{"name": f"p{tag}{b}x{p}"} for p in range(ports)],
                    }
                    for b in range(bridges)
                ],
            }
        }
    )


def timed_apply(switchd: ovs_support.Ovs, bridges: int, ports: int) -> dict[str, float]:
    tag = secrets.token_hex(2)
    with tempfile.TemporaryDirectory() as tree:
        manager = dpm.Manager(
            writer.SysfsWriter(hosttree.lay_out(Path(tree))),
            ovs.OvsSwitch(switchd.remote),
            hosttree.RecordingLinks(),
        )
        profile = big_profile(tag, bridges, ports)
        started = time.perf_counter()
        assert manager.switch is not None
        manager.switch.state()  # the agent connects once (schema, first dump) and stays
        connect_s = time.perf_counter() - started
        started = time.perf_counter()
        applied = manager.apply(profile)
        apply_s = time.perf_counter() - started
        started = time.perf_counter()
        again = manager.apply(profile)
        reapply_s = time.perf_counter() - started
        assert again.changes == (), again.changes
        started = time.perf_counter()
        manager.remove()
        remove_s = time.perf_counter() - started
        manager.switch.close()
    made = sum(1 for c in applied.changes if c.startswith("port "))
    assert made == bridges * ports, f"{made} ports made, {bridges * ports} asked"
    return {
        "connect_s": connect_s,
        "apply_s": apply_s,
        "reapply_s": reapply_s,
        "remove_s": remove_s,
    }


def timed_vsctl(switchd: ovs_support.Ovs, bridges: int, ports: int) -> float:
    tag = secrets.token_hex(2)
    argv: list[str] = []
    for b in range(bridges):
        name = f"v{tag}{b}"
        argv += ["--", "add-br", name, "--", "set", "bridge", name, "datapath_type=netdev"]
        for p in range(ports):
            port = f"q{tag}{b}x{p}"
            argv += ["--", "add-port", name, port, "--", "set", "interface", port, "type=internal"]
    started = time.perf_counter()
    switchd.vsctl(*argv)
    took = time.perf_counter() - started
    switchd.vsctl(*[a for b in range(bridges) for a in ("--", "del-br", f"v{tag}{b}")])
    return took


def throughput(switchd: ovs_support.Ovs, seconds: float, rounds: int) -> dict[str, float]:
    tag = secrets.token_hex(2)
    vms = [
        vmnet.make_vm(f"meridian-bench{tag}-{i}", f"bv{tag}{i}", f"10.231.9.{i}/24") for i in (1, 2)
    ]
    raw: list[vmnet.Vm] = []
    with tempfile.TemporaryDirectory() as tree:
        manager = dpm.Manager(
            writer.SysfsWriter(hosttree.lay_out(Path(tree))),
            ovs.OvsSwitch(switchd.remote),
            hosttree.RecordingLinks(),
        )
        try:
            bridge = {"name": f"bb{tag}", "ports": [{"name": v.dev, "type": "system"} for v in vms]}
            manager.apply(dp.parse({"ovs": {"bridges": [bridge]}}))
            raw = veth_pair(tag)
            bridged, direct = [], []
            for _ in range(rounds):
                bridged.append(vmnet.iperf(vms[1], vms[0], seconds=seconds))
                direct.append(vmnet.iperf(raw[1], raw[0], seconds=seconds))
        finally:
            for vm in [*vms, *raw]:
                vm.remove()
            manager.remove()
            if manager.switch is not None:
                manager.switch.close()
    return {"netdev_bps": statistics.median(bridged), "veth_bps": statistics.median(direct)}


def veth_pair(tag: str) -> list[vmnet.Vm]:
    """Two namespaces joined by one kernel veth pair (offloads as the kernel sets them)."""
    a = vmnet.Vm(f"meridian-raw{tag}-1", "eth0", "10.231.10.1/24")
    b = vmnet.Vm(f"meridian-raw{tag}-2", "eth0", "10.231.10.2/24")
    for vm in (a, b):
        vm.remove()
        vmnet.run("ip", "netns", "add", vm.ns)
    vmnet.run(
        "ip",
        "link",
        "add",
        "eth0",
        "netns",
        a.ns,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        b.ns,
    )
    for vm in (a, b):
        vm.exec("ip", "addr", "add", vm.address, "dev", "eth0")
        vm.exec("ip", "link", "set", "eth0", "up")
        vm.exec("ip", "link", "set", "lo", "up")
    return [a, b]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bridges", type=int, default=8)
    parser.add_argument("--ports", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2×4 ports, 1 s, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.bridges, args.ports, args.seconds, args.rounds = 2, 4, 1.0, 1
    switchd = ovs_support.start()
    try:
        applied = timed_apply(switchd, args.bridges, args.ports)
        vsctl_s = timed_vsctl(switchd, args.bridges, args.ports)
        traffic = throughput(switchd, args.seconds, args.rounds)
    finally:
        switchd.stop()
    ports = args.bridges * args.ports
    ratio = traffic["netdev_bps"] / traffic["veth_bps"]
    print(f"\nprofile: {args.bridges} netdev bridges × {args.ports} internal ports ({ports})")
    print(f"{'what':<44}{'seconds':>10}")
    print(f"{'connect (once per agent: schema, first dump)':<44}{applied['connect_s']:>10.3f}")
    print(f"{'apply (Meridian, ovsdbapp, checked, owned)':<44}{applied['apply_s']:>10.3f}")
    print(f"{'apply again (idempotent: nothing written)':<44}{applied['reapply_s']:>10.3f}")
    print(f"{'remove (owned bridges, set keys)':<44}{applied['remove_s']:>10.3f}")
    print(f"{'baseline: one ovs-vsctl command line':<44}{vsctl_s:>10.3f}")
    print(f"\nTCP, iperf3, {args.seconds:g} s × {args.rounds} (median)")
    print(f"{'path':<44}{'Gbit/s':>10}")
    print(f"{'VM → VM through a managed netdev bridge':<44}{traffic['netdev_bps'] / 1e9:>10.3f}")
    print(f"{'baseline: kernel veth pair':<44}{traffic['veth_bps'] / 1e9:>10.3f}")
    print(f"{'ratio':<44}{ratio:>10.3f}")
    figures: dict[str, Any] = {
        "benchmark": "datapath",
        "bridges": args.bridges,
        "ports_per_bridge": args.ports,
        "connect_s": round(applied["connect_s"], 4),
        "apply_s": round(applied["apply_s"], 4),
        "reapply_s": round(applied["reapply_s"], 4),
        "remove_s": round(applied["remove_s"], 4),
        "vsctl_baseline_s": round(vsctl_s, 4),
        "apply_vs_vsctl": round(applied["apply_s"] / vsctl_s, 3),
        "netdev_gbps": round(traffic["netdev_bps"] / 1e9, 3),
        "veth_gbps": round(traffic["veth_bps"] / 1e9, 3),
        "netdev_vs_veth": round(ratio, 4),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
