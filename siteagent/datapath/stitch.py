"""The site's driver with the stitching gateway added: kinds ``gateway_endpoint``,
``network_stitch`` and ``network_verify``; every other kind goes to the wrapped driver.

- ``gateway_endpoint`` builds the gateway namespace and underlay (``[gateway]`` settings)
  and reports the endpoint as its outputs (``address``, ``mtu``); an agent without a
  gateway configured fails it permanently, saying so — the broker then refuses stitched
  networks over this site.
- ``network_stitch`` converges the network's bridge, tunnels, addresses and routes, and
  the site's own network and subnet of that name through the wrapped driver (the VNF
  ports of a stitched virtual link attach to it); on a simulated site each such port is
  also a namespace on the bridge with its address (outputs ``members``). A tombstone
  removes every device of it (found by the bridge's alias after a restart) and the
  site's network. An agent without a gateway whose cloud has its own interconnect
  (the openstack driver: Neutron BGPVPN with the network's route target, and a router
  for l3-routed) reports an endpoint without an address and builds the network there.
- ``network_verify`` probes every target peer (ICMP and TCP from inside the namespace)
  and reports the per-pair results as JSON in its outputs, with the round's nonce.

All netlink work runs on one worker thread (pyroute2's synchronous API keeps its own
event loop, and one thread keeps the gateway's changes in order). Invariant 4: applying
the same generation again converges to the same kernel state and the same status.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from siteagent import errors, models
from siteagent.datapath import probe
from siteagent.datapath import spec as gw_spec
from siteagent.datapath.gateway import Gateway
from siteagent.drivers.base import Driver
from siteagent.settings import AgentSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

ENDPOINT = "gateway_endpoint"
STITCH = "network_stitch"
VERIFY = "network_verify"
KINDS = (ENDPOINT, STITCH, VERIFY)
NOT_CONFIGURED = (
    "this site's agent has no stitching gateway: set [gateway] address and device in its settings"
)


def endpoint_from(settings: AgentSettings) -> gw_spec.Endpoint | None:
    cfg = settings.gateway
    if not cfg.address:
        return None
    return gw_spec.Endpoint(cfg.namespace, cfg.device, cfg.address, cfg.mtu, cfg.next_hop)


class StitchDriver:
    def __init__(
        self,
        inner: Driver,
        site: str,
        endpoint: gw_spec.Endpoint | None,
        probe_port: int,
        *,
        simulated: bool = False,
        underlay_mtu: int = 1500,
    ) -> None:
        self.inner, self.site, self.probe_port = inner, site, probe_port
        self.simulated = simulated
        """The wrapped driver simulates its cloud: VNF ports become namespaces here."""
        self.underlay_mtu = underlay_mtu
        """Without a gateway, the MTU a cloud interconnect reports for the site."""
        self.gateway = Gateway(endpoint) if endpoint is not None else None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gateway")
        self._status: dict[tuple[str, str], models.ObjectStatus] = {}
        self._sockets: probe.Sockets | None = None
        self._responder: probe.Responder | None = None

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def inventory(self) -> models.Inventory:
        return await self.inner.inventory()

    async def usage(self) -> models.Usage:
        return await self.inner.usage()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def apply(self, obj: models.DesiredObject) -> models.ObjectStatus:
        if obj.kind not in KINDS:
            return await self.inner.apply(obj)
        try:
            if self.gateway is None:
                outputs = await self._apply_cloud(obj)
            else:
                outputs = await self._apply(obj, self.gateway)
        except errors.DatapathError as exc:
            raise errors.DriverError(obj.kind, obj.name, str(exc), temporary=True) from exc
        status = models.ObjectStatus(
            obj.kind, obj.name, obj.generation, models.ObjectState.READY, outputs=outputs
        )
        self._status[(obj.kind, obj.name)] = status
        return status

    async def _apply(self, obj: models.DesiredObject, gw: Gateway) -> dict[str, str]:
        if obj.kind == ENDPOINT:
            await self._run(gw.ensure)
            await self._serve_probes(gw)
            return {"address": gw.endpoint.ip, "mtu": str(gw.endpoint.mtu)}
        if obj.kind == STITCH:
            net = self._parse(obj)
            await self._run(gw.ensure)
            await self._run(gw.apply, net)
            outputs = {"vni": str(net.vni), "mtu": str(net.mtu), "bridge": net.bridge}
            if self.simulated:
                members = await self._run(gw.members, net)
                outputs["members"] = json.dumps(members, separators=(",", ":"), sort_keys=True)
            await self._site_network(obj, net)
            return outputs
        targets = [(str(t[0]), str(t[1])) for t in obj.spec.get("targets", [])]
        await self._serve_probes(gw)
        assert self._sockets is not None
        found = await probe.probe(self.site, self._sockets, targets, port=self.probe_port)
        results = json.dumps([r.as_json() for r in found], separators=(",", ":"))
        return {"nonce": str(obj.spec.get("nonce", "")), "results": results}

    async def _apply_cloud(self, obj: models.DesiredObject) -> dict[str, str]:
        """No gateway here: the wrapped cloud's own interconnect (BGPVPN), if it has one."""
        connect = getattr(self.inner, "interconnect", None)
        if connect is None or obj.kind == VERIFY:
            raise errors.InvalidSpec("gateway", NOT_CONFIGURED, kind=obj.kind, name=obj.name)
        if obj.kind == ENDPOINT:
            return {"address": "", "mtu": str(self.underlay_mtu), "interconnect": "bgpvpn"}
        net = self._parse(obj)
        await self._site_network(obj, net)
        made: dict[str, str] = await connect(net.network, obj.spec)
        return {**made, "vni": str(net.vni), "mtu": str(net.mtu)}

    async def _site_network(self, obj: models.DesiredObject, net: gw_spec.NetworkSpec) -> None:
        """The site's own network and subnet of that name (the VNF's ports attach to it),
        through the wrapped driver."""
        if not net.project or net.segment is None:
            return
        seg = net.segment
        wanted: list[tuple[str, dict[str, object]]] = [
            ("network", {"project": net.project, "network_type": "vxlan", "mtu": net.mtu}),
            (
                "subnet",
                {
                    "project": net.project,
                    "network": net.network,
                    "cidr": seg.subnet,
                    "gateway_ip": seg.gateway,
                    "enable_dhcp": True,  # served from the site's pool, its DHCP range
                    "allocation_pools": [{"start": seg.pool[0], "end": seg.pool[1]}],
                },
            ),
        ]
        for kind, spec in wanted:
            got = await self.inner.apply(
                models.DesiredObject(kind, net.network, obj.generation, spec)
            )
            if got.state is models.ObjectState.FAILED:
                msg = f"{kind}: {got.message}"
                raise errors.DriverError(obj.kind, obj.name, msg, temporary=True)

    def _parse(self, obj: models.DesiredObject) -> gw_spec.NetworkSpec:
        try:
            return gw_spec.from_json(dict(obj.spec))
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.InvalidSpec(
                "spec", f"not a network_stitch spec: {exc}", kind=obj.kind, name=obj.name
            ) from exc

    async def _serve_probes(self, gw: Gateway) -> None:
        if self._responder is not None:
            return
        self._sockets = probe.Sockets(gw.endpoint.namespace)
        self._responder = probe.Responder(self._sockets, self.probe_port)
        await self._responder.start()

    async def observe(self, kind: str, name: str) -> models.ObjectStatus | None:
        if kind not in KINDS:
            return await self.inner.observe(kind, name)
        return self._status.get((kind, name))

    async def delete(self, kind: str, name: str) -> models.ObjectStatus:
        if kind not in KINDS:
            return await self.inner.delete(kind, name)
        gw = self.gateway
        if kind == STITCH and gw is not None:
            vni = await self._run(gw.vni_of_network, name)
            if vni is not None:
                await self._run(gw.remove, vni)
        disconnect = getattr(self.inner, "disconnect", None)
        if kind == STITCH and gw is None and disconnect is not None:
            await disconnect(name)
        if kind == STITCH:
            for inner_kind in ("subnet", "network"):  # the site's own, if it was made
                await self.inner.delete(inner_kind, name)
        self._status.pop((kind, name), None)
        return models.ObjectStatus(kind, name, 0, models.ObjectState.DELETED)

    async def close(self) -> None:
        try:
            await self.inner.close()
        finally:
            if self._responder is not None:
                await self._responder.stop()
            if self._sockets is not None:
                self._sockets.close()
            if self.gateway is not None:
                await self._run(self.gateway.close)
            self._pool.shutdown(wait=False)


def stitch_driver(inner: Driver, settings: AgentSettings) -> StitchDriver:
    return StitchDriver(
        inner,
        settings.site_id,
        endpoint_from(settings),
        settings.gateway.probe_port,
        simulated=settings.driver == "sim",
        underlay_mtu=settings.gateway.mtu,
    )
