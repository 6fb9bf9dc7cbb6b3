"""Check a data-path profile against the host before anything is changed.

``problems`` lists what makes the profile impossible here — an unknown PF, a PF without
SR-IOV, more VFs than ``sriov_totalvfs``, huge pages beyond a node's memory or of a size
the node lacks, a PMD mask or CPU role outside the host's CPUs, a bridge or port name
another owner already uses — each as ``(dotted field, problem)``. ``notes`` lists what is
only worth saying: pinned CPUs the kernel does not isolate, shared CPUs it does (CPU
roles are checked, never changed at runtime).

Invariant: ``raise_problems`` runs before the first write, so a bad profile changes
nothing and the previous state stays.
"""

from __future__ import annotations

from collections.abc import Mapping

from siteagent import errors
from siteagent.datapath import ovs
from siteagent.datapath import profile as dp
from siteagent.hardware import cpulist, writer

Problem = tuple[str, str]


def problems(
    profile: dp.Profile,
    facts: writer.HostFacts,
    pfs: Mapping[str, writer.PfFacts | None],
    switch: ovs.SwitchState | None,
) -> list[Problem]:
    found = _hugepages(profile, facts) + _sriov(profile, pfs) + _cpus(profile, facts)
    if switch is not None:
        found += _names(profile, switch)
    elif profile.ovs.bridges or profile.ovs.other_config:
        found.append(("ovs", "the profile configures OVS but this agent manages no switch"))
    return found


def raise_problems(found: list[Problem], *, name: str = dp.NAME) -> None:
    if found:
        where, first = found[0]
        more = "; ".join(f"{w}: {p}" for w, p in found[1:])
        problem = f"{first}" + (f" (also {more})" if more else "")
        raise errors.InvalidSpec(where, problem + "; nothing was changed", kind=dp.KIND, name=name)


def notes(profile: dp.Profile, facts: writer.HostFacts) -> list[str]:
    said = []
    for i, role in enumerate(profile.cpu):
        loose = cpulist.parse(role.pinned) - facts.isolated
        if loose:
            said.append(
                f"cpu.{i}.pinned: CPUs {cpulist.format(loose)} are not isolated by the kernel;"
                " pinned instances share them with the host"
            )
        taken = cpulist.parse(role.shared) & facts.isolated
        if taken:
            said.append(
                f"cpu.{i}.shared: CPUs {cpulist.format(taken)} are isolated by the kernel;"
                " the scheduler will not balance floating work onto them"
            )
    return said


def _hugepages(profile: dp.Profile, facts: writer.HostFacts) -> list[Problem]:
    found: list[Problem] = []
    asked_kb: dict[int, int] = {}
    for i, req in enumerate(profile.hugepages):
        node = facts.nodes.get(req.node)
        if node is None:
            found.append((f"hugepages.{i}.node", f"the host has no NUMA node {req.node}"))
            continue
        if req.page_size_kb not in node.hugepages:
            sizes = ", ".join(f"{s} kB" for s in sorted(node.hugepages)) or "none"
            found.append(
                (
                    f"hugepages.{i}.page_size_kb",
                    f"node {req.node} has no {req.page_size_kb} kB pages (sizes: {sizes})",
                )
            )
            continue
        asked_kb[req.node] = asked_kb.get(req.node, 0) + req.count * req.page_size_kb
        if asked_kb[req.node] > node.memory_kb:
            found.append(
                (
                    f"hugepages.{i}.count",
                    f"{asked_kb[req.node] // 1024} MiB of huge pages asked on node {req.node},"
                    f" which has {node.memory_kb // 1024} MiB of memory",
                )
            )
    return found


def _sriov(profile: dp.Profile, pfs: Mapping[str, writer.PfFacts | None]) -> list[Problem]:
    found: list[Problem] = []
    for i, req in enumerate(profile.sriov):
        pf = pfs.get(req.pf)
        if pf is None:
            found.append((f"sriov.{i}.pf", f"unknown PF {req.pf!r}: no such interface"))
        elif pf.totalvfs is None:
            found.append((f"sriov.{i}.pf", f"{req.pf!r} is not SR-IOV capable"))
        elif req.vfs > pf.totalvfs:
            found.append(
                (f"sriov.{i}.vfs", f"{req.vfs} VFs asked, {req.pf} has at most {pf.totalvfs}")
            )
    return found


def _cpus(profile: dp.Profile, facts: writer.HostFacts) -> list[Problem]:
    found: list[Problem] = []
    pmd = profile.pmd_cpus()
    if pmd is not None and not pmd <= facts.cpus:
        found.append(
            (
                f"ovs.other_config.{dp.PMD_MASK}",
                f"CPUs {cpulist.format(pmd - facts.cpus)} are not on any NUMA node of the host"
                f" (CPUs: {cpulist.format(facts.cpus)})",
            )
        )
    for i, role in enumerate(profile.cpu):
        node = facts.nodes.get(role.node)
        if node is None:
            found.append((f"cpu.{i}.node", f"the host has no NUMA node {role.node}"))
            continue
        for part in ("pinned", "shared"):
            stray = cpulist.parse(getattr(role, part)) - node.cpus
            if stray:
                found.append(
                    (
                        f"cpu.{i}.{part}",
                        f"CPUs {cpulist.format(stray)} are not on node {role.node}"
                        f" (its CPUs: {cpulist.format(node.cpus)})",
                    )
                )
    return found


def _names(profile: dp.Profile, switch: ovs.SwitchState) -> list[Problem]:
    found: list[Problem] = []
    for i, bridge in enumerate(profile.ovs.bridges):
        have = switch.bridges.get(bridge.name)
        if have is not None and not have.owned:
            found.append(
                (f"ovs.bridges.{i}.name", f"bridge {bridge.name!r} exists and is not Meridian's")
            )
        if bridge.datapath_type not in switch.datapath_types and switch.datapath_types:
            found.append(
                (
                    f"ovs.bridges.{i}.datapath_type",
                    f"this ovs-vswitchd has no {bridge.datapath_type!r} datapath"
                    f" (it has: {', '.join(sorted(switch.datapath_types))})",
                )
            )
        for j, port in enumerate(bridge.ports):
            there = switch.port(port.name)
            if there is not None and (not there.owned or there.bridge != bridge.name):
                owner = "Meridian's" if there.owned else "not Meridian's"
                found.append(
                    (
                        f"ovs.bridges.{i}.ports.{j}.name",
                        f"port {port.name!r} exists on bridge {there.bridge!r} ({owner})",
                    )
                )
    return found
