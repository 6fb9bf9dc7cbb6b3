"""The OpenStack sites behind ``meridian dev up --openstack``: minicloud, found or started.

``ensure`` runs ``deploy/minicloud/minicloud up`` (a no-op in well under a second when it
already runs, minutes from nothing) and reads ``status --json`` into one ``OpenStackSite``
per minicloud site. The local federation then starts one ``openstack``-driver agent per
site. Invariant 6 holds here too: only cloud *names* go into the agents' settings and the
broker learns nothing but the site id and region; the credentials stay in minicloud's own
``clouds.yaml``, which only the agent processes read (``OS_CLIENT_CONFIG_FILE``).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker import errors

ENV_COMMAND = "MERIDIAN_MINICLOUD"
"""Environment variable naming the minicloud command (default: the repository's own)."""

UP_TIMEOUT = 1800.0
"""Seconds ``minicloud up`` may take: a first install on a loaded machine takes ~11 min."""


@dataclass(frozen=True, slots=True)
class OpenStackSite:
    """One minicloud site as the federation sees it."""

    site_id: str
    """Meridian's id for the site (``openstack-site1``, ...)."""
    cloud: str
    """The agent's clouds.yaml entry (minicloud's admin user of the site)."""
    region: str
    """The site's Keystone region; also its Meridian region."""


@dataclass(frozen=True, slots=True)
class Minicloud:
    state_dir: Path
    clouds_yaml: Path
    sites: tuple[OpenStackSite, ...]


def default_command() -> Path:
    """``$MERIDIAN_MINICLOUD``, else ``deploy/minicloud/minicloud`` of this checkout."""
    if env := os.environ.get(ENV_COMMAND):
        return Path(env)
    return Path(__file__).resolve().parents[2] / "deploy" / "minicloud" / "minicloud"


def site_id_for(name: str) -> str:
    return f"openstack-{name}"


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise errors.BrokerError(f"{' '.join(argv)} took longer than {timeout:.0f}s") from exc
    except OSError as exc:
        raise errors.BrokerError(f"cannot run {argv[0]}: {exc}") from exc


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def parse_status(text: str) -> Minicloud:
    """``minicloud status --json`` → ``Minicloud``; a clear error when it is not that."""
    try:
        data: Any = json.loads(text)
        sites = tuple(
            OpenStackSite(site_id=site_id_for(str(s["name"])), cloud=s["cloud"], region=s["region"])
            for s in data["sites"]
        )
        found = Minicloud(Path(data["state_dir"]), Path(data["clouds_yaml"]), sites)
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.BrokerError(
            f"minicloud status --json printed something else than expected ({exc}): "
            f"{_tail(text, 5)!r}"
        ) from exc
    if not found.sites:
        raise errors.BrokerError("minicloud reports no sites")
    return found


def ensure(
    command: Path | None = None,
    *,
    state_dir: Path | None = None,
    sites: int | None = None,
    timeout: float = UP_TIMEOUT,
) -> Minicloud:
    """Start minicloud (or reuse the running one) and describe its sites.

    ``state_dir`` and ``sites`` are passed on when given; otherwise minicloud's own
    defaults apply (``$MINICLOUD_STATE``, and the site count it already has).
    """
    cmd = command or default_command()
    if not cmd.is_file():
        raise errors.BrokerError(
            f"minicloud not found at {cmd}: run from a Meridian checkout or set {ENV_COMMAND}"
        )
    base = [str(cmd)] + (["--state-dir", str(state_dir)] if state_dir else [])
    up = [*base, "up", "--quiet"] + (["--sites", str(sites)] if sites else [])
    done = _run(up, timeout)
    if done.returncode != 0:
        output = _tail(f"{done.stdout}\n{done.stderr}")
        raise errors.BrokerError(f"minicloud up failed (exit {done.returncode}):\n{output}")
    status = _run([*base, "status", "--json"], 60.0)
    if status.returncode != 0:
        raise errors.BrokerError(
            f"minicloud is not fully running after up (status exit {status.returncode}); "
            f"see `{cmd} status`:\n{_tail(status.stderr or status.stdout)}"
        )
    return parse_status(status.stdout)
