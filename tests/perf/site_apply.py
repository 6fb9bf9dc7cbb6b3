"""Site apply benchmark: one agent converging N servers with ports on one minicloud site.

Run: ``python -m tests.perf.site_apply [--servers 20] [--rounds 1]``. It needs
``deploy/minicloud`` (started here with ``up`` on ``$MINICLOUD_STATE``, else the openstack
tier's state dir under ``.state/``; reused when up; it drives site 1). Per round it measures

1. the agent: a ``Reconciler`` driving the ``OpenStackDriver`` from desired state (one
   network, one subnet, N ports, N servers each on its port) until every server is READY
   (ACTIVE), polling at 1 s;
2. the baseline in the same run: the same objects created with direct openstacksdk calls,
   one at a time, then polled at 1 s until every server is ACTIVE.

The ratio agent / direct is the driver's overhead. Both clean up after themselves (the
agent through its own deletes, also timed). Memory is the RSS of this process (the agent
runs in it) before and after. It prints a table and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any


from siteagent import models
from siteagent.drivers.openstack import OpenStackDriver
from siteagent.drivers.openstack_support import connect
from siteagent.reconciler import Backoff, Reconciler
from tests.perf.harness import Report, ratio, rss_kib, say
from tests.support.minicloud import CLOUD, PROJECT, REPO, Minicloud

IMAGE = "minicloud-tiny"
FLAVOR = "mc.tiny"


def desired(servers: int) -> list[models.DesiredObject]:
    D = models.DesiredObject
    objs = [
        D("network", "net", 1, {"project": PROJECT, "network_type": "vxlan"}),
        D("subnet", "subnet", 1, {"project": PROJECT, "network": "net", "cidr": "10.88.0.0/22"}),
    ]
    for i in range(servers):
        objs.append(D("port", f"p{i}", 1, {"project": PROJECT, "network": "net"}))
        objs.append(
            D(
                "server",
                f"vm{i}",
                1,
                {"project": PROJECT, "flavor": FLAVOR, "image": IMAGE, "ports": [f"p{i}"]},
            )
        )
    return objs


async def agent_round(servers: int) -> dict[str, float]:
    site = f"bench{uuid.uuid4().hex[:6]}"
    driver = OpenStackDriver(site, CLOUD)
    reconciler = Reconciler(driver, backoff=Backoff(base=0.5, cap=5.0), poll_interval=1.0)
    runner = asyncio.create_task(reconciler.run())
    objs = desired(servers)
    try:
        start = time.perf_counter()
        for obj in objs:
            await reconciler.submit(obj)
        await asyncio.wait_for(reconciler.wait_idle(), 600)
        converge = time.perf_counter() - start
        states = [reconciler.status(o.kind, o.name) for o in objs]
        ready = sum(s is not None and s.state is models.ObjectState.READY for s in states)
        if ready != len(objs):
            bad = [s for s in states if s is None or s.state is not models.ObjectState.READY]
            raise RuntimeError(f"agent converged {ready}/{len(objs)}: {bad[:3]}")
        start = time.perf_counter()
        for obj in objs:
            await reconciler.submit(
                models.DesiredObject(obj.kind, obj.name, 2, obj.spec, deleted=True)
            )
        await asyncio.wait_for(reconciler.wait_idle(), 600)
        teardown = time.perf_counter() - start
        return {"converge_s": converge, "teardown_s": teardown}
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await driver.close()


def direct_round(servers: int) -> dict[str, float]:
    conn = connect(cloud=CLOUD)
    tag = f"direct{uuid.uuid4().hex[:6]}"
    created_servers: list[Any] = []
    ports: list[Any] = []
    net = subnet = None
    try:
        start = time.perf_counter()
        project = conn.identity.find_project(PROJECT).id
        image = conn.image.find_image(IMAGE).id
        flavor = conn.compute.find_flavor(FLAVOR).id
        net = conn.network.create_network(name=f"{tag}-net", project_id=project)
        subnet = conn.network.create_subnet(
            name=f"{tag}-subnet",
            network_id=net.id,
            project_id=project,
            ip_version=4,
            cidr="10.89.0.0/22",
        )
        for i in range(servers):
            port = conn.network.create_port(
                name=f"{tag}-p{i}", network_id=net.id, project_id=project
            )
            ports.append(port)
            created_servers.append(
                conn.compute.create_server(
                    name=f"{tag}-vm{i}",
                    flavor_id=flavor,
                    image_id=image,
                    networks=[{"port": port.id}],
                )
            )
        pending = {s.id for s in created_servers}
        while pending:
            time.sleep(1.0)
            for server in conn.compute.servers(name=f"^{tag}-"):
                if server.status == "ERROR":
                    raise RuntimeError(f"direct server {server.name} went to ERROR")
                if server.status == "ACTIVE":
                    pending.discard(server.id)
        converge = time.perf_counter() - start
        return {"converge_s": converge}
    finally:
        for server in created_servers:
            conn.compute.delete_server(server, ignore_missing=True)
        for server in created_servers:
            conn.compute.wait_for_delete(server, interval=0.5, wait=120)
        for port in ports:
            conn.network.delete_port(port, ignore_missing=True)
        if subnet is not None:
            conn.network.delete_subnet(subnet, ignore_missing=True)
        if net is not None:
            conn.network.delete_network(net, ignore_missing=True)
        conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 servers")
    args = parser.parse_args()
    if args.quick:
        args.servers = min(args.servers, 5)
    # the openstack tier's minicloud: one per machine, reused when it runs
    state = Path(os.environ.get("MINICLOUD_STATE", REPO / ".state/minicloud-openstack-tier"))
    cloud = Minicloud(state, state / "clouds.yaml")
    # no --sites: as many as the state dir already runs (the tier's uses 2), never fewer
    say(f"minicloud up ({state})")
    done = cloud.run("up", "--quiet")
    if done.returncode != 0:
        raise SystemExit(f"minicloud up failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(cloud.clouds_yaml)

    report = Report("site_apply")
    rss_start = rss_kib(os.getpid())
    rows = []
    agents: list[float] = []
    directs: list[float] = []
    teardowns: list[float] = []
    for n in range(args.rounds):
        say(f"round {n + 1}: direct openstacksdk, {args.servers} servers with ports")
        direct = await asyncio.to_thread(direct_round, args.servers)
        say(f"round {n + 1}: agent (Reconciler + OpenStackDriver)")
        agent = await agent_round(args.servers)
        agents.append(agent["converge_s"])
        directs.append(direct["converge_s"])
        teardowns.append(agent["teardown_s"])
        rows.append(
            [
                n + 1,
                f"{agent['converge_s']:.1f}",
                f"{direct['converge_s']:.1f}",
                ratio(agent["converge_s"], direct["converge_s"]),
                f"{agent['teardown_s']:.1f}",
            ]
        )
    rss_end = rss_kib(os.getpid())
    agent_s = min(agents)
    direct_s = min(directs)
    report.table(
        f"{args.servers} servers + ports on one minicloud site",
        ["round", "agent converge s", "direct sdk s", "ratio", "agent teardown s"],
        rows,
    )
    report.table(
        "agent process memory",
        ["figure", "KiB"],
        [["RSS before", rss_start], ["RSS after", rss_end], ["growth", rss_end - rss_start]],
    )
    report.figures.update(
        servers=args.servers,
        rounds=args.rounds,
        agent_converge_s=round(agent_s, 2),
        direct_converge_s=round(direct_s, 2),
        overhead_ratio=ratio(agent_s, direct_s),
        agent_teardown_s=round(min(teardowns), 2),
        rss_start_kib=rss_start,
        rss_end_kib=rss_end,
    )
    report.emit()


if __name__ == "__main__":
    asyncio.run(main())
