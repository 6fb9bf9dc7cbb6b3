"""Smoke test of a running minicloud through openstacksdk, as Meridian's tests use it.

Runs with the services venv's python and ``OS_CLIENT_CONFIG_FILE`` set:
``smoke.py --site=N CLOUD...``. Every site: catalog, Neutron VPNaaS + BGPVPN extensions,
both Glance file stores. Site N: a flavor with ``hw:cpu_policy`` (round-trips; the fake
driver does not pin), a server on ``minicloud-net`` as the member user -> ACTIVE with its
port bound by the openvswitch driver, an image copied to store fs2 with ``copy-image``,
an IKE policy, a BGPVPN with a network association; then everything it made is deleted.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

import openstack


def step(message: str, t0: list[float]) -> None:
    now = time.monotonic()
    print(f"  {now - t0[0]:5.1f}s  {message}", flush=True)


def check_site(cloud: str) -> None:
    conn = openstack.connect(cloud=cloud)
    exts = {e.alias for e in conn.network.extensions()}
    missing = {"vpnaas", "bgpvpn", "router"} - exts
    assert not missing, f"{cloud}: neutron extensions missing: {missing}"
    stores = conn.image.get("/info/stores").json()["stores"]
    ids = {s["id"] for s in stores}
    assert {"fs1", "fs2"} <= ids, f"{cloud}: glance stores {ids}"
    print(
        f"{cloud}: region {conn.config.region_name}, vpnaas+bgpvpn loaded, stores {sorted(ids)}",
        flush=True,
    )


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _delete_image(conn, img) -> None:
    for attempt in range(3):
        try:
            conn.image.delete_image(img, ignore_missing=True)
            return
        except openstack.exceptions.HttpException:
            if attempt == 2:
                raise
            time.sleep(2)


def server_roundtrip(cloud: str) -> None:
    t0 = [time.monotonic()]
    admin = openstack.connect(cloud=cloud)
    member = openstack.connect(cloud=f"{cloud}-member")
    tag = uuid.uuid4().hex[:8]
    flavor = admin.compute.create_flavor(name=f"mc-smoke-{tag}", ram=128, vcpus=1, disk=1)
    admin.compute.create_flavor_extra_specs(flavor, {"hw:cpu_policy": "dedicated"})
    specs = admin.compute.fetch_flavor_extra_specs(flavor).extra_specs
    assert specs.get("hw:cpu_policy") == "dedicated", specs
    step(f"flavor {flavor.name} with hw:cpu_policy=dedicated", t0)
    image = member.image.find_image("minicloud-tiny", ignore_missing=False)
    net = member.network.find_network("minicloud-net", ignore_missing=False)
    server = member.compute.create_server(
        name=f"mc-smoke-{tag}", flavor_id=flavor.id, image_id=image.id, networks=[{"uuid": net.id}]
    )
    try:
        server = member.compute.wait_for_server(server, status="ACTIVE", wait=180)
        step(f"server {server.name} ACTIVE on {server.compute_host or 'a compute'}", t0)
        ports = list(admin.network.ports(device_id=server.id))
        assert ports and all(p.binding_vif_type == "ovs" for p in ports), [
            (p.id, p.binding_vif_type) for p in ports
        ]
        step(f"port bound (vif_type ovs, host {ports[0].binding_host_id})", t0)
    finally:
        member.compute.delete_server(server)
        member.compute.wait_for_delete(server, wait=120)
        admin.compute.delete_flavor(flavor)
    step("server and flavor deleted", t0)
    extras(admin, member, net, tag, t0)


def extras(admin, member, net, tag: str, t0: list[float]) -> None:
    """Glance copy-image to fs2, a VPNaaS IKE policy, a BGPVPN network association."""
    img = admin.image.create_image(
        name=f"mc-smoke-{tag}",
        disk_format="raw",
        container_format="bare",
        data=os.urandom(65536),
        visibility="private",
    )
    try:
        admin.image.import_image(img, method="copy-image", stores=["fs2"])

        def copied() -> bool:
            props = admin.image.get_image(img).properties
            # the import task writes these last; deleting before that races it (HTTP 500)
            return "fs2" in props.get("stores", "") and not props.get(
                "os_glance_importing_to_stores"
            )

        wait_for(copied, 60, "copy-image to fs2")
        step("image copied to store fs2 (copy-image)", t0)
    finally:
        _delete_image(admin, img)

    ike = admin.network.create_vpn_ike_policy(name=f"mc-smoke-{tag}", auth_algorithm="sha256")
    admin.network.delete_vpn_ike_policy(ike)
    step("VPNaaS IKE policy created and deleted", t0)

    # BGPVPN, network and association must share a project: the tenant's
    bgpvpn = admin.network.create_bgpvpn(
        name=f"mc-smoke-{tag}", route_targets=["64512:1"], project_id=member.current_project_id
    )
    try:
        assoc = member.network.create_bgpvpn_network_association(bgpvpn, network_id=net.id)
        member.network.delete_bgpvpn_network_association(bgpvpn, assoc)
    finally:
        admin.network.delete_bgpvpn(bgpvpn)
    step("BGPVPN created, network associated (as the tenant), deleted", t0)


def main() -> int:
    site = 1
    clouds = []
    for arg in sys.argv[1:]:
        if arg.startswith("--site="):
            site = int(arg.split("=", 1)[1])
        else:
            clouds.append(arg)
    for cloud in clouds:
        check_site(cloud)
    print(f"{clouds[site - 1]}: server round trip", flush=True)
    server_roundtrip(clouds[site - 1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
