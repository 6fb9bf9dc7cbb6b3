"""``clouds.yaml`` for the minicloud: per site an admin cloud and a member cloud.

- ``minicloud-siteN``: ``meridian-admin`` in project ``meridian`` (roles admin, member);
- ``minicloud-siteN-member``: ``meridian-member`` in project ``meridian-tenant`` (member);
- ``minicloud-siteN-cloudadmin``: Keystone's bootstrap ``admin`` in project ``admin``.
"""

from __future__ import annotations

import json
import os

from .layout import Layout, Site


def entries(lay: Layout, site: Site) -> dict[str, dict]:
    def cloud(user: str, password: str, project: str) -> dict:
        return {
            "region_name": site.region,
            "identity_api_version": 3,
            "interface": "public",
            "auth": {
                "auth_url": site.url("keystone"),
                "username": user,
                "password": password,
                "project_name": project,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
        }

    return {
        site.cloud: cloud("meridian-admin", lay.secrets["user"], "meridian"),
        f"{site.cloud}-member": cloud("meridian-member", lay.secrets["user"], "meridian-tenant"),
        f"{site.cloud}-cloudadmin": cloud("admin", lay.secrets["admin"], "admin"),
    }


def write(lay: Layout) -> None:
    """Writes clouds.yaml (JSON is valid YAML: no YAML library needed) with mode 0600."""
    clouds = {}
    for site in lay.sites():
        clouds.update(entries(lay, site))
    text = "# written by deploy/minicloud; one cloud per site and user\n"
    text += json.dumps({"clouds": clouds}, indent=2) + "\n"
    path = lay.clouds_yaml
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)
