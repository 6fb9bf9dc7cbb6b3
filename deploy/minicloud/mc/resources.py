"""Ready-made things every site offers tests, created once (find-or-create by name).

- image ``minicloud-tiny``: 1 MiB of random bytes (no internet, no cirros), raw/bare,
  public, in Glance store ``fs1``;
- flavor ``mc.tiny`` (1 vCPU, 128 MiB, 1 GiB), public;
- network ``minicloud-net`` with subnet ``minicloud-subnet`` (192.0.2.0/24, never routed)
  owned by the ``meridian-tenant`` project.
"""

from __future__ import annotations

import os

from . import bootstrap, rest
from .layout import Layout, Site

IMAGE = "minicloud-tiny"
FLAVOR = "mc.tiny"
NETWORK = "minicloud-net"


def ensure(lay: Layout, site: Site) -> None:
    admin = bootstrap.admin_session(lay, site)
    _image(admin, site)
    _flavor(admin, site)
    member = rest.Session(
        site.url("keystone"), "meridian-member", lay.secrets["user"], "meridian-tenant"
    )
    _network(member, site)


def _image(s: rest.Session, site: Site) -> None:
    glance = site.url("glance")
    images = s.call("GET", f"{glance}/v2/images?name={IMAGE}")["images"]
    active = [i for i in images if i["status"] == "active"]
    if active:
        return
    for stale in images:  # a half-made one from an interrupted run
        s.call("DELETE", f"{glance}/v2/images/{stale['id']}")
    img = s.call(
        "POST",
        f"{glance}/v2/images",
        {
            "name": IMAGE,
            "disk_format": "raw",
            "container_format": "bare",
            "visibility": "public",
            "min_disk": 0,
            "min_ram": 0,
        },
    )
    s.call(
        "PUT",
        f"{glance}/v2/images/{img['id']}/file",
        raw=os.urandom(1 << 20),
        headers={"Content-Type": "application/octet-stream"},
    )


def _flavor(s: rest.Session, site: Site) -> None:
    nova = site.url("nova")
    flavors = s.call("GET", f"{nova}/flavors?is_public=None")["flavors"]
    if not any(f["name"] == FLAVOR for f in flavors):
        s.call(
            "POST",
            f"{nova}/flavors",
            {"flavor": {"name": FLAVOR, "ram": 128, "vcpus": 1, "disk": 1}},
        )


def _network(s: rest.Session, site: Site) -> None:
    neutron = site.url("neutron") + "/v2.0"
    net = s.find_or_create(f"{neutron}/networks", "network", {"name": NETWORK})
    subnets = s.call("GET", f"{neutron}/subnets?network_id={net['id']}")["subnets"]
    if not subnets:
        s.call(
            "POST",
            f"{neutron}/subnets",
            {
                "subnet": {
                    "name": "minicloud-subnet",
                    "network_id": net["id"],
                    "ip_version": 4,
                    "cidr": "192.0.2.0/24",
                    "enable_dhcp": False,
                }
            },
        )
