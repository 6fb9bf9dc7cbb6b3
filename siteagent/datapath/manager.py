"""Apply a data-path profile to the agent's host, watch it for drift, describe the result.

``apply`` reads the host (sysfs facts, PFs, the switch), checks the profile against it
(``check.py``: a bad profile raises ``InvalidSpec`` before the first write) and converges
in a fixed order: huge pages, then VF counts (through 0, as the kernel requires) and VF
link attributes, then Open vSwitch. Applying the same profile again writes nothing.

``drift`` compares the host with the last applied profile: an ``other_config`` value
(``pmd-cpu-mask``), a bridge, port or flow table, a VF count or a huge page count that
someone changed by hand. Each finding is an event; with ``policy: correct`` the profile
is applied again, with ``report`` the drift is only reported.

``host_view`` is what the inventory says of the host afterwards: the capabilities the
applied data path offers (``CUSTOM_OVS_DPDK`` when an owned userspace bridge is up,
``CUSTOM_SRIOV`` when VFs are enabled on a mapped PF), VF pools per NUMA node from what
was applied, and huge pages as the kernel counts them (free included).

Blocking (sysfs, ovsdb): the agent calls it through ``asyncio.to_thread``, one call at a
time (``lock``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from siteagent import models
from siteagent.datapath import check, ovs
from siteagent.datapath import profile as dp
from siteagent.hardware import writer

log = logging.getLogger(__name__)

OVS_DPDK = "CUSTOM_OVS_DPDK"
SRIOV = "CUSTOM_SRIOV"
EVENTS_KEPT = 200


@dataclass(frozen=True, slots=True)
class Event:
    at_ms: int
    kind: str
    """``applied``, ``refused``, ``drift``, ``corrected``, ``removed``."""
    message: str


@dataclass(frozen=True, slots=True)
class Applied:
    changes: tuple[str, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HostView:
    traits: dict[str, str] = field(default_factory=dict)
    sriov: dict[int, tuple[models.SriovPool, ...]] = field(default_factory=dict)
    hugepages: dict[int, tuple[models.HugePages, ...]] = field(default_factory=dict)


class Manager:
    """The data path of one host: ``writer`` for sysfs, ``switch`` for OVS (None: none)."""

    def __init__(
        self,
        sysfs: writer.SysfsWriter,
        switch: ovs.OvsSwitch | None,
        vf_links: writer.VfLinks,
        *,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.sysfs = sysfs
        self.switch = switch
        self.vf_links = vf_links
        self.applied: dp.Profile | None = None
        self.events: collections.deque[Event] = collections.deque(maxlen=EVENTS_KEPT)
        self.lock = threading.Lock()
        self._notes: list[str] = []
        self._on_event = on_event

    # -- applying ----------------------------------------------------------------------

    def apply(self, profile: dp.Profile) -> Applied:
        """Converge the host to ``profile``; ``InvalidSpec`` (nothing changed) if impossible."""
        with self.lock:
            facts = self.sysfs.facts()
            pfs = {v.pf: self.sysfs.pf(v.pf) for v in profile.sriov}
            state = self.switch.state() if self.switch is not None else None
            try:
                check.raise_problems(check.problems(profile, facts, pfs, state))
            except Exception as exc:
                self._event("refused", str(exc))
                raise
            changes = self._hugepages(profile) + self._vfs(profile, pfs)
            if self.switch is not None and state is not None:
                changes += self.switch.apply(profile.ovs, state)
            self.applied = profile
            said = check.notes(profile, facts)
            if changes:
                self._event("applied", "; ".join(changes))
            if said != self._notes:  # said once, not on every correction
                for note in said:
                    self._event("cpu-roles", note)
                self._notes = said
            return Applied(tuple(changes), tuple(said))

    def remove(self) -> list[str]:
        """Forget the profile: owned bridges and set ``other_config`` keys go; huge pages
        and VFs stay as they are (instances may still use them)."""
        with self.lock:
            changes: list[str] = []
            if self.switch is not None:
                changes = self.switch.remove_owned(self.switch.state())
            self.applied = None
            if changes:
                self._event("removed", "; ".join(changes))
            return changes

    def _hugepages(self, profile: dp.Profile) -> list[str]:
        changes = []
        for req in profile.hugepages:
            before = self.sysfs.hugepages(req.node, req.page_size_kb)
            if before is not None and before.total == req.count:
                continue
            got = self.sysfs.set_hugepages(req.node, req.page_size_kb, req.count)
            changes.append(f"node{req.node} {req.page_size_kb} kB pages: {got} of {req.count}")
            if got != req.count:
                self._event(
                    "short",
                    f"node {req.node}: the kernel granted {got} of {req.count}"
                    f" {req.page_size_kb} kB pages (memory fragmented or in use)",
                )
        return changes

    def _vfs(self, profile: dp.Profile, pfs: dict[str, writer.PfFacts | None]) -> list[str]:
        changes = []
        before = {v.pf: v for v in self.applied.sriov} if self.applied is not None else {}
        for req in profile.sriov:
            changed = self.sysfs.set_vfs(req.pf, req.vfs)
            if changed:
                changes.append(f"{req.pf}: {req.vfs} VFs")
            old = before.get(req.pf)
            links_known = old is not None and (old.trust, old.spoof_check) == (
                req.trust,
                req.spoof_check,
            )
            if req.vfs and (changed or not links_known):
                for vf in range(req.vfs):
                    self.vf_links.set(req.pf, vf, trust=req.trust, spoof_check=req.spoof_check)
                changes.append(
                    f"{req.pf}: VFs trust {'on' if req.trust else 'off'},"
                    f" spoof-check {'on' if req.spoof_check else 'off'}"
                )
        return changes

    # -- drift -------------------------------------------------------------------------

    def drift(self) -> list[str]:
        """What differs between the host and the applied profile (nothing applied: [])."""
        with self.lock:
            profile = self.applied
            if profile is None:
                return []
            found = []
            for req in profile.hugepages:
                pool = self.sysfs.hugepages(req.node, req.page_size_kb)
                total = pool.total if pool is not None else 0
                if total != req.count:
                    found.append(
                        f"node{req.node} {req.page_size_kb} kB pages: {total},"
                        f" profile says {req.count}"
                    )
            for vf in profile.sriov:
                pf = self.sysfs.pf(vf.pf)
                have = pf.numvfs if pf is not None else 0
                if have != vf.vfs:
                    found.append(f"{vf.pf}: {have} VFs, profile says {vf.vfs}")
            if self.switch is not None:
                found += _switch_drift(self.switch, profile.ovs)
            return found

    def check_drift(self) -> list[str]:
        """Look for drift once: report it as events, and correct it if the policy says so."""
        found = self.drift()
        profile = self.applied
        if not found or profile is None:
            return found
        self._event("drift", "; ".join(found))
        if profile.policy == "correct":
            applied = self.apply(profile)
            self._event("corrected", "; ".join(applied.changes) or "nothing left to change")
        return found

    # -- the inventory -----------------------------------------------------------------

    def host_view(self) -> HostView:
        with self.lock:
            profile = self.applied
            facts = self.sysfs.facts()
            traits: dict[str, str] = {}
            sriov: dict[int, list[models.SriovPool]] = {}
            if profile is not None:
                for req in profile.sriov:
                    pf = self.sysfs.pf(req.pf)
                    if pf is None or not req.physnet or not pf.numvfs:
                        continue
                    pool = models.SriovPool(
                        physnet=req.physnet, device=pf.name, vfs_total=pf.numvfs
                    )
                    sriov.setdefault(pf.numa_node, []).append(pool)
                    traits[SRIOV] = "true"
                if self.switch is not None and _userspace_bridge_up(self.switch, profile):
                    traits[OVS_DPDK] = "true"
            pages = {
                n.id: tuple(
                    models.HugePages(page_size_kb=size, total=p.total, free=p.free)
                    for size, p in sorted(n.hugepages.items())
                )
                for n in facts.nodes.values()
            }
            return HostView(traits, {k: tuple(v) for k, v in sriov.items()}, pages)

    def pf_details(self) -> dict[str, writer.PfFacts]:
        profile = self.applied
        found = {}
        for req in profile.sriov if profile is not None else ():
            pf = self.sysfs.pf(req.pf)
            if pf is not None:
                found[req.pf] = pf
        return found

    def _event(self, kind: str, message: str) -> None:
        event = Event(int(time.time() * 1000), kind, message)
        self.events.append(event)
        level = logging.WARNING if kind in ("refused", "drift", "short") else logging.INFO
        log.log(level, "datapath %s: %s", kind, message)
        if self._on_event is not None:
            self._on_event(event)


def _switch_drift(switch: ovs.OvsSwitch, config: dp.OvsConfig) -> list[str]:
    state = switch.state()
    found = []
    for key, value in sorted(config.other_config.items()):
        have = state.other_config.get(key)
        if have != value:
            found.append(f"other_config:{key} is {have!r}, profile says {value!r}")
    for bridge in config.bridges:
        have_br = state.bridges.get(bridge.name)
        if have_br is None or not have_br.owned:
            found.append(f"bridge {bridge.name} is missing")
            continue
        if have_br.datapath_type != bridge.datapath_type:
            found.append(f"bridge {bridge.name} is {have_br.datapath_type}")
        for port in bridge.ports:
            attrs = ovs.interface_attrs(port)
            there = have_br.ports.get(port.name)
            if there is None:
                found.append(f"port {port.name} is missing from {bridge.name}")
            elif (there.type, there.options) != (attrs["type"], attrs["options"]):
                found.append(f"port {port.name} is {there.type} {there.options}")
        if bridge.flows and switch.flows_differ(bridge.name, bridge.flows):
            found.append(f"bridge {bridge.name}: flows differ")
    return found


def _userspace_bridge_up(switch: ovs.OvsSwitch, profile: dp.Profile) -> bool:
    wanted = {b.name for b in profile.ovs.bridges if b.datapath_type == "netdev"}
    if not wanted:
        return False
    state = switch.state()
    return any(b in state.bridges and state.bridges[b].owned for b in wanted)
