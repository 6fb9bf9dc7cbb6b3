"""The broker's own Keystone session, built from a ``clouds.yaml`` entry.

The broker validates callers' tokens as a service user whose credentials live where
OpenStack keeps them (``clouds.yaml``, chosen by ``api.keystone_cloud`` or ``OS_CLOUD``).
Every problem with that configuration is a ``SettingsError`` naming what to fix, raised
at start-up rather than on the first request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from keystoneauth1 import loading
from keystoneauth1 import session as ks_session

from broker import errors


def clouds_yaml_paths() -> list[Path]:
    """Where OpenStack's tools look for clouds.yaml, in order."""
    paths = []
    if env := os.environ.get("OS_CLIENT_CONFIG_FILE"):
        paths.append(Path(env))
    paths += [
        Path.cwd() / "clouds.yaml",
        Path.home() / ".config" / "openstack" / "clouds.yaml",
        Path("/etc/openstack/clouds.yaml"),
    ]
    return paths


def find_cloud(name: str, paths: list[Path] | None = None) -> dict[str, Any]:
    for path in paths if paths is not None else clouds_yaml_paths():
        if not path.is_file():
            continue
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise errors.SettingsError([f"api.keystone_cloud: cannot read {path}: {exc}"]) from exc
        cloud = (data.get("clouds") or {}).get(name)
        if isinstance(cloud, dict):
            return cloud
    raise errors.SettingsError(
        [
            (
                f"api.keystone_cloud: no cloud {name!r} in any clouds.yaml "
                "(OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack/clouds.yaml, "
                "/etc/openstack/clouds.yaml)"
            )
        ]
    )


def service_session(
    keystone_url: str, cloud: str, *, paths: list[Path] | None = None
) -> ks_session.Session:
    """A keystoneauth1 Session authenticated as the broker's service user."""
    name = cloud or os.environ.get("OS_CLOUD", "")
    if not name:
        raise errors.SettingsError(
            [
                (
                    "api.keystone_cloud: keystone auth needs the clouds.yaml entry of the "
                    "broker's service user (or OS_CLOUD)"
                )
            ]
        )
    entry = find_cloud(name, paths)
    auth = dict(entry.get("auth") or {})
    if keystone_url and not auth.get("auth_url"):
        auth["auth_url"] = keystone_url
    if not auth.get("auth_url"):
        raise errors.SettingsError([f"api.keystone_url: cloud {name!r} has no auth.auth_url"])
    try:
        loader: Any = loading.get_plugin_loader(entry.get("auth_type", "password"))
        auth_plugin = loader.load_from_options(**auth)
    except Exception as exc:  # keystoneauth1 raises several unrelated types here
        raise errors.SettingsError([f"api.keystone_cloud: cloud {name!r}: {exc}"]) from exc
    verify: bool | str = entry.get("cacert") or bool(entry.get("verify", True))
    return ks_session.Session(auth=auth_plugin, verify=verify)
