"""Config files of one site's services, rendered from its Layout/Site.

Files go to ``<state>/siteN/etc/<service>/``; paste files are copied from the venv's
``etc/``. Every service talks to its site's Keystone with its own service user; service
users hold ``admin`` and ``service`` (keystonemiddleware needs the latter on service
tokens). Quotas are raised through the config defaults, so every project gets them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from . import layout
from .layout import Layout, Site

Sections = dict[str, dict[str, object]]

SERVICE_USERS = ("glance", "placement", "neutron", "nova")
COMPUTES = ("compute1", "compute2")


def render(sections: Sections) -> str:
    """INI text; list values become repeated keys (oslo.config multi-valued options)."""
    out = []
    for name, opts in sections.items():
        out.append(f"[{name}]")
        for key, value in opts.items():
            values = value if isinstance(value, list) else [value]
            for v in values:
                v = str(v).lower() if isinstance(v, bool) else v
                out.append(f"{key} = {v}")
        out.append("")
    return "\n".join(out)


def write(path: Path, text: str) -> bool:
    """Writes only on change (keeps mtimes and fingerprints stable); True if written."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def etc(site: Site, service: str) -> Path:
    return site.dir / "etc" / service


def _auth(lay: Layout, site: Site, user: str) -> dict[str, object]:
    """keystoneauth password options for a service user of this site."""
    return {
        "auth_type": "password",
        "auth_url": site.url("keystone"),
        "username": user,
        "password": lay.secrets["service"],
        "project_name": "service",
        "user_domain_name": "Default",
        "project_domain_name": "Default",
        "region_name": site.region,
    }


def _authtoken(lay: Layout, site: Site, user: str) -> dict[str, object]:
    opts = _auth(lay, site, user)
    opts["www_authenticate_uri"] = site.url("keystone")
    opts["service_token_roles_required"] = True
    return opts


def _common(site: Site) -> dict[str, object]:
    return {"debug": False, "use_stderr": True}


def keystone(lay: Layout, site: Site) -> list[Path]:
    d = etc(site, "keystone")
    conf = d / "keystone.conf"
    write(
        conf,
        render(
            {
                "DEFAULT": _common(site),
                "database": {"connection": lay.db_url(site.db("keystone"))},
                # bcrypt's default cost makes every password auth ~0.2s of CPU
                "identity": {"password_hash_rounds": 4},
                "token": {"provider": "fernet"},
                "fernet_tokens": {"key_repository": d / "fernet-keys"},
                # keystone-manage bootstrap loads the receipt provider too, which exits when
                # its repository (by default keystone's system config dir) is missing
                "fernet_receipts": {"key_repository": d / "fernet-keys"},
                "credential": {"key_repository": d / "credential-keys"},
            }
        ),
    )
    return [conf]


def glance(lay: Layout, site: Site) -> list[Path]:
    d = etc(site, "glance")
    data = site.dir / "glance"
    paste = d / "glance-api-paste.ini"
    _copy_paste(lay, "glance/glance-api-paste.ini", paste)
    conf = d / "glance-api.conf"
    write(
        conf,
        render(
            {
                "DEFAULT": {
                    **_common(site),
                    "enabled_backends": "fs1:file, fs2:file",
                    "enabled_import_methods": "[glance-direct,web-download,copy-image]",
                    "worker_self_reference_url": f"http://{layout.HOST}:{site.port('glance')}",
                },
                "database": {"connection": lay.db_url(site.db("glance"))},
                "keystone_authtoken": _authtoken(lay, site, "glance"),
                "paste_deploy": {"flavor": "keystone", "config_file": paste},
                "glance_store": {"default_backend": "fs1"},
                "fs1": {
                    "filesystem_store_datadir": data / "fs1",
                    "store_description": "file store 1",
                },
                "fs2": {
                    "filesystem_store_datadir": data / "fs2",
                    "store_description": "file store 2",
                },
                "os_glance_staging_store": {"filesystem_store_datadir": data / "staging"},
                "os_glance_tasks_store": {"filesystem_store_datadir": data / "tasks"},
                "oslo_concurrency": {"lock_path": site.dir / "lock" / "glance"},
            }
        ),
    )
    return [conf, paste]


def placement(lay: Layout, site: Site) -> list[Path]:
    conf = etc(site, "placement") / "placement.conf"
    write(
        conf,
        render(
            {
                "DEFAULT": _common(site),
                "placement_database": {"connection": lay.db_url(site.db("placement"))},
                "api": {"auth_strategy": "keystone"},
                "keystone_authtoken": _authtoken(lay, site, "placement"),
            }
        ),
    )
    return [conf]


def neutron(lay: Layout, site: Site) -> list[Path]:
    d = etc(site, "neutron")
    paste = d / "api-paste.ini"
    _copy_paste(lay, "neutron/api-paste.ini", paste)
    conf = d / "neutron.conf"
    write(
        conf,
        render(
            {
                "DEFAULT": {
                    **_common(site),
                    "host": site.host("ctl"),
                    "core_plugin": "ml2",
                    "service_plugins": "router,trunk,vpnaas,bgpvpn",
                    "auth_strategy": "keystone",
                    "allow_overlapping_ips": True,
                    "transport_url": lay.transport_url(site),
                    "api_paste_config": paste,
                    "state_path": site.dir / "neutron",
                    # no real agents: the registered fake OVS agents must never turn "down"
                    "agent_down_time": 86400,
                    "dhcp_agent_notification": False,
                    "notify_nova_on_port_status_changes": True,
                    "notify_nova_on_port_data_changes": True,
                    "rpc_workers": 1,
                    "rpc_state_report_workers": 1,
                },
                "database": {"connection": lay.db_url(site.db("neutron")), "max_pool_size": 10},
                "keystone_authtoken": _authtoken(lay, site, "neutron"),
                "nova": _auth(lay, site, "nova"),
                "oslo_concurrency": {"lock_path": site.dir / "lock" / "neutron"},
                "oslo_messaging_notifications": {"driver": "noop"},
                "quotas": {
                    k: -1
                    for k in (
                        "quota_network",
                        "quota_subnet",
                        "quota_port",
                        "quota_router",
                        "quota_floatingip",
                        "quota_security_group",
                        "quota_security_group_rule",
                    )
                },
                "service_providers": {
                    "service_provider": [
                        "VPN:strongswan:neutron_vpnaas.services.vpn.service_drivers.ipsec."
                        "IPsecVPNDriver:default",
                        "BGPVPN:Dummy:networking_bgpvpn.neutron.services.service_drivers.driver_api."
                        "BGPVPNDriver:default",
                    ]
                },
            }
        ),
    )
    ml2 = d / "ml2_conf.ini"
    write(
        ml2,
        render(
            {
                "ml2": {
                    "type_drivers": "flat,vlan,vxlan",
                    "tenant_network_types": "vxlan",
                    "mechanism_drivers": "openvswitch",
                    "extension_drivers": "port_security",
                },
                "ml2_type_flat": {"flat_networks": "public"},
                "ml2_type_vlan": {"network_vlan_ranges": "physnet1:1000:1999"},
                "ml2_type_vxlan": {"vni_ranges": "1:100000"},
            }
        ),
    )
    return [conf, ml2, paste]


def nova(lay: Layout, site: Site) -> list[Path]:
    d = etc(site, "nova")
    paste = d / "api-paste.ini"
    _copy_paste(lay, "nova/api-paste.ini", paste)
    conf = d / "nova.conf"
    write(
        conf,
        render(
            {
                "DEFAULT": {
                    **_common(site),
                    "host": site.host("ctl"),
                    "my_ip": layout.HOST,
                    "transport_url": lay.transport_url(site),
                    "state_path": site.dir / "nova",
                    "compute_driver": "fake.FakeDriverWithoutFakeNodes",
                },
                "api": {"auth_strategy": "keystone"},
                "wsgi": {"api_paste_config": paste},
                "api_database": {
                    "connection": lay.db_url(site.db("nova_api")),
                    "max_pool_size": 10,
                },
                "database": {"connection": lay.db_url(site.db("nova_cell1")), "max_pool_size": 10},
                "keystone_authtoken": _authtoken(lay, site, "nova"),
                "service_user": {**_auth(lay, site, "nova"), "send_service_user_token": True},
                "placement": _auth(lay, site, "placement"),
                "neutron": _auth(lay, site, "neutron"),
                "glance": {"region_name": site.region},
                "cinder": {"os_region_name": site.region},
                "oslo_concurrency": {"lock_path": site.dir / "lock" / "nova"},
                "oslo_messaging_notifications": {"driver": "noop"},
                "conductor": {"workers": 1},
                "scheduler": {"workers": 1, "discover_hosts_in_cells_interval": 30},
                # no NUMATopologyFilter: the fake driver has no NUMA topology to fit into
                "filter_scheduler": {
                    "enabled_filters": "ComputeFilter,ComputeCapabilitiesFilter,"
                    "ImagePropertiesFilter,ServerGroupAntiAffinityFilter,"
                    "ServerGroupAffinityFilter"
                },
                "quota": {
                    k: -1
                    for k in (
                        "instances",
                        "cores",
                        "ram",
                        "metadata_items",
                        "key_pairs",
                        "server_groups",
                        "server_group_members",
                    )
                },
                "vnc": {"enabled": False},
            }
        ),
    )
    files = [conf, paste]
    for name in COMPUTES:
        overlay = d / f"{name}.conf"
        write(
            overlay,
            render(
                {
                    "DEFAULT": {
                        "host": site.host(name),
                        "state_path": site.dir / "nova" / name,
                        "instances_path": site.dir / "nova" / name / "instances",
                    }
                }
            ),
        )
        files.append(overlay)
    return files


def all_for(lay: Layout, site: Site) -> dict[str, list[Path]]:
    """Writes every config file of ``site``; returns them per service."""
    for sub in ("glance", "neutron", "nova"):
        (site.dir / "lock" / sub).mkdir(parents=True, exist_ok=True)
    return {
        "keystone": keystone(lay, site),
        "glance": glance(lay, site),
        "placement": placement(lay, site),
        "neutron": neutron(lay, site),
        "nova": nova(lay, site),
    }


def _copy_paste(lay: Layout, rel: str, dest: Path) -> None:
    src = lay.venv / "etc" / rel
    if not src.exists():
        raise SystemExit(f"minicloud: {src} missing from the services venv")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists() or dest.read_bytes() != src.read_bytes():
        shutil.copyfile(src, dest)
