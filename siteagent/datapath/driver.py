"""The site's driver, with the agent host's data path added: the ``datapath`` kind and
the inventory it changes.

Objects of kind ``datapath`` (the profile, ``profile.py``) are applied by the
``Manager``; every other kind goes to the wrapped driver. The inventory is the wrapped
driver's, with the managed host (``host``: this machine, or the inventory host it stands
for) rebuilt from what was applied: its capability traits, its VF pools and its huge
pages as the kernel counts them. ``watch`` looks for drift every ``interval`` seconds and
reports each finding as the object's status (READY with the drift in its message and
outputs, corrected or not per the profile's policy).

Invariant 4 holds as for any driver: the same generation applied twice changes nothing
(the manager writes only differences) and returns the same status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from siteagent import errors, models
from siteagent.datapath import manager as dpm
from siteagent.datapath import profile as dp
from siteagent.drivers.base import Driver

log = logging.getLogger(__name__)
CAPABILITIES = (dpm.OVS_DPDK, dpm.SRIOV)


class DatapathDriver:
    def __init__(
        self,
        inner: Driver,
        manager: dpm.Manager,
        *,
        host: str,
        on_inventory: Callable[[], None] | None = None,
    ) -> None:
        self.inner = inner
        self.manager = manager
        self.host = host
        self.on_inventory = on_inventory
        """Called when the inventory changed (the session sends it again)."""
        self._status: models.ObjectStatus | None = None

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def usage(self) -> models.Usage:
        return await self.inner.usage()

    async def close(self) -> None:
        try:
            await self.inner.close()
        finally:
            if self.manager.switch is not None:
                self.manager.switch.close()

    async def apply(self, obj: models.DesiredObject) -> models.ObjectStatus:
        if obj.kind != dp.KIND:
            return await self.inner.apply(obj)
        if obj.name != dp.NAME:
            raise errors.InvalidSpec(
                "name",
                f"a site has one datapath object, named {dp.NAME!r}",
                kind=obj.kind,
                name=obj.name,
            )
        profile = dp.parse(obj.spec, name=obj.name)
        applied = await asyncio.to_thread(self.manager.apply, profile)
        message = "; ".join(applied.changes) or "already as declared"
        self._status = self._ready(obj.generation, message, notes=applied.notes)
        self._changed()
        return self._status

    async def observe(self, kind: str, name: str) -> models.ObjectStatus | None:
        if kind != dp.KIND:
            return await self.inner.observe(kind, name)
        return self._status

    async def delete(self, kind: str, name: str) -> models.ObjectStatus:
        if kind != dp.KIND:
            return await self.inner.delete(kind, name)
        changes = await asyncio.to_thread(self.manager.remove)
        self._status = None
        self._changed()
        message = "; ".join(changes) or "nothing to remove"
        return models.ObjectStatus(kind, name, 0, models.ObjectState.DELETED, message)

    async def inventory(self) -> models.Inventory:
        inventory = await self.inner.inventory()
        view = await asyncio.to_thread(self.manager.host_view)
        hosts = tuple(_merged(h, view) if h.name == self.host else h for h in inventory.hosts)
        return dataclasses.replace(inventory, hosts=hosts)

    async def watch(self, interval: float, report: Callable[[models.ObjectStatus], None]) -> None:
        """Look for drift until cancelled; each finding becomes the object's status."""
        while True:
            await asyncio.sleep(interval)
            if self._status is None:
                continue
            try:
                found = await asyncio.to_thread(self.manager.check_drift)
            except errors.SiteAgentError as exc:
                log.warning("datapath drift check failed: %s", exc)
                continue
            if not found:
                continue
            policy = self.manager.applied.policy if self.manager.applied else "report"
            verb = "corrected" if policy == "correct" else "reported (policy: report)"
            status = self._ready(
                self._status.observed_generation,
                f"drift {verb}: " + "; ".join(found),
                drift="; ".join(found),
            )
            self._status = status
            report(status)
            self._changed()

    def _ready(
        self, generation: int, message: str, *, notes: tuple[str, ...] = (), drift: str = ""
    ) -> models.ObjectStatus:
        outputs = {
            f"pf.{name}": (
                f"pci={pf.pci_address} vendor={pf.vendor} device={pf.device}"
                f" driver={pf.driver} link={pf.link} totalvfs={pf.totalvfs} vfs={pf.numvfs}"
            )
            for name, pf in self.manager.pf_details().items()
        }
        if notes:
            outputs["cpu_roles"] = "; ".join(notes)
        if drift:
            outputs["drift"] = drift
        return models.ObjectStatus(
            dp.KIND, dp.NAME, generation, models.ObjectState.READY, message, outputs=outputs
        )

    def _changed(self) -> None:
        if self.on_inventory is not None:
            self.on_inventory()


def _merged(host: models.Host, view: dpm.HostView) -> models.Host:
    traits = {k: v for k, v in host.traits.items() if k not in CAPABILITIES}
    traits.update(view.traits)
    cells = []
    for cell in host.cells:
        pools = view.sriov.get(cell.id, ())
        devices = {p.device for pools_ in view.sriov.values() for p in pools_}
        kept = tuple(p for p in cell.sriov if p.device not in devices)
        cells.append(
            dataclasses.replace(
                cell,
                sriov=kept + pools,
                hugepages=view.hugepages.get(cell.id, cell.hugepages),
            )
        )
    return dataclasses.replace(host, traits=traits, cells=tuple(cells))
