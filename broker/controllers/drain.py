"""Draining a site for maintenance: a planned switchover, one VNF at a time (issue 10).

``drains/<site>`` (written by ``POST /v1/sites/{id}/drain``, removed by ``/undrain``)
says the site is being emptied. ``Drains`` picks the site's VNFs one at a time — the
highest ``priority`` first — and has the failover controller feed that VNF's machines
``machine.Drain(site)``: the active role is switched over first (demoted, reported, then
the standby promoted: never two active), every member at the site is condemned and
re-placed elsewhere through the replacer (so within the re-placement limits), and it is
deleted only once its replacement is READY. The next VNF starts when the previous one
has nothing left serving at the site (each member there replaced and being deleted, or
refused a replacement). Replacements never go to a drained site; undrain stops the drain
(members already moved stay where they are).

Invariant: at most one VNF per drained site is being moved at any time.
"""

from __future__ import annotations

from collections.abc import Callable

from broker.failover import machine


class Drains:
    """The drained sites and the VNF each is moving (see the module)."""

    def __init__(self, mark: Callable[[str], None]) -> None:
        self.mark = mark
        self.sites: set[str] = set()
        self._moving: dict[str, str] = {}
        """Drained site → the VNF being moved off it."""
        self._asked: dict[str, str] = {}
        """VNF → the site its next step is to drain."""
        self._machines: dict[str, dict[str, machine.Vnf]] = {}
        """VNF → its machines as its last step left them."""

    def set(self, site: str, on: bool) -> None:
        if on:
            self.sites.add(site)
        else:
            self.sites.discard(site)
            self._moving.pop(site, None)
            self._asked = {v: s for v, s in self._asked.items() if s != site}
        self.tick()

    def asked(self, vnf_id: str) -> str:
        return self._asked.get(vnf_id, "")

    def took(self, vnf_id: str, site: str) -> None:
        """The VNF's step that carried the drain of ``site`` landed."""
        if site and self._asked.get(vnf_id) == site:
            del self._asked[vnf_id]

    def seen(self, vnf_id: str, machines: dict[str, machine.Vnf]) -> None:
        if machines:
            self._machines[vnf_id] = machines
        else:
            self._machines.pop(vnf_id, None)
        if any(v == vnf_id for v in self._moving.values()):
            self.tick()

    def tick(self) -> None:
        """Start the next VNF of each drained site whose previous one is done."""
        for site in sorted(self.sites):
            moving = self._moving.get(site)
            if moving is not None and not self._done(moving, site):
                continue
            nxt = self._next(site)
            if nxt is None:
                self._moving.pop(site, None)
                continue
            self._moving[site] = nxt
            self._asked[nxt] = site
            self.mark(nxt)

    def moving(self, site: str) -> str:
        return self._moving.get(site, "")

    def _done(self, vnf_id: str, site: str) -> bool:
        if self._asked.get(vnf_id) == site:
            return False
        for mach in self._machines.get(vnf_id, {}).values():
            for m in mach.members:
                if m.site != site:
                    continue
                if not m.condemned or not (m.refused or m.deleting or m.released):
                    return False
        return True

    def _next(self, site: str) -> str | None:
        """The most urgent VNF with a live member at ``site``."""
        best: tuple[int, str] | None = None
        for vnf_id, machines in self._machines.items():
            live = [
                mach
                for mach in machines.values()
                if any(m.site == site and not m.condemned for m in mach.members)
            ]
            if not live:
                continue
            rank = (-max(mach.priority for mach in live), vnf_id)
            if best is None or rank < best:
                best = rank
        return best[1] if best is not None else None
