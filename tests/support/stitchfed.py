"""A stitching federation at our own seam, for API and CLI tests: sites registered with
gateway endpoints as agents report them, and a loop answering desired stitching objects
as the sites' agents would (the real agent's work is proven by the netns tests)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from broker.devfed.federation import Federation
from broker.controllers.stitching import ENDPOINT, ENDPOINT_NAME, STITCH, VERIFY
from broker.models import objects
from broker.settings import StitchingSettings
from broker.store import keys
from broker.store.protocol import Store
from siteagent.datapath import probe
from tests.support import netlab

T = TypeVar("T")

SITES = ["east", "west", "north"]
SETTINGS = StitchingSettings(
    supernets={"*": ("10.50.0.0/23",)}, external_prefixes=("10.50.1.0/25",)
)


async def seed(store: Store, *, without_gateway: str = "") -> int:
    await store.put(keys.LEADER, b"broker-test-1")
    kv = await store.get(keys.LEADER)
    assert kv is not None
    for i, site in enumerate([*SITES, "bare"]):
        await store.put(keys.site(site), json.dumps({"id": site, "region": "eu"}).encode())
        if site in ("bare", without_gateway):
            status = objects.Status(
                ENDPOINT,
                ENDPOINT_NAME,
                1,
                objects.State.FAILED,
                message="this site's agent has no stitching gateway",
            )
        else:
            status = objects.Status(
                ENDPOINT,
                ENDPOINT_NAME,
                1,
                objects.State.READY,
                outputs={"address": f"192.0.2.{i + 1}", "mtu": "1500"},
            )
        await store.put(keys.observed(site, ENDPOINT, ENDPOINT_NAME), status.encode())
    return kv.create_revision


async def agents(store: Store) -> None:
    """Answer desired stitching objects as the sites' agents would."""
    while True:
        kvs, _ = await store.get_prefix(keys.DESIRED)
        for kv in kvs:
            site, kind, name = keys.split_object(kv.key)
            if kind not in (STITCH, VERIFY):
                continue
            want = objects.Desired.decode(kv.value)
            okey = keys.observed(site, kind, name)
            seen = await store.get(okey)
            if seen and objects.Status.decode(seen.value).observed_generation >= want.generation:
                continue
            outputs = {}
            if kind == VERIFY and not want.deleted:
                pairs = [
                    probe.PairResult(site, t, a, True, True, 0.0, 0.1, 0.2).as_json()
                    for t, a in want.spec["targets"]
                ]
                outputs = {"nonce": want.spec["nonce"], "results": json.dumps(pairs)}
            state = objects.State.DELETED if want.deleted else objects.State.READY
            status = objects.Status(kind, name, want.generation, state, outputs=outputs)
            await store.put(okey, status.encode())
        await asyncio.sleep(0.02)


def call(fed: Federation, method: str, path: str, **kw: Any) -> httpx.Response:
    """One API request to a running federation, as its admin."""
    headers = {"Authorization": f"Bearer {fed.token}"}
    with httpx.Client(base_url=fed.api_url(), timeout=60.0, verify=fed.api_verify) as client:
        return client.request(method, path, headers=headers, **kw)


def until(check: Callable[[], T | None], within: float, what: str) -> T:
    """``check()``'s first truthy answer, polled; fails after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what} did not happen within {within} s"
        time.sleep(0.1)


def gateway_sections(lab: netlab.Lab) -> dict[str, dict[str, dict[str, object]]]:
    """Each lab site's agent ``[gateway]`` section: its namespace on the lab's WAN."""
    out: dict[str, dict[str, dict[str, object]]] = {}
    for site in lab.sites:
        ep = lab.endpoint(site)
        gw = {"namespace": ep.namespace, "device": ep.device, "address": ep.address, "mtu": ep.mtu}
        out[site] = {"gateway": dict(gw)}
    return out
