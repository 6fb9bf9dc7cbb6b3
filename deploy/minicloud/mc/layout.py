"""Where everything of one minicloud lives: directories, ports, secrets, names.

One state directory holds one minicloud. Its ``state.json`` is written once, on the first
``up``, and read by every later command, so ports and passwords never change under a
running cloud. Ports come from one block of 100 per state directory:

    base+0 MariaDB   base+1 RabbitMQ (AMQP)   base+2 Erlang distribution   base+3 epmd
    base+10*i + 0..4  site i: keystone, glance, placement, neutron, nova (i = 1..9)
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent  # deploy/minicloud
REPO = HERE.parent.parent
CONSTRAINTS = HERE / "constraints.txt"
VENVTOOLS = HERE / "venvtools"

MAX_SITES = 9
API_SERVICES = ("keystone", "glance", "placement", "neutron", "nova")
REGION_WORDS = ("One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine")
HOST = "127.0.0.1"


def default_state_dir() -> Path:
    """``$MINICLOUD_STATE``, else ``.state/minicloud`` in the repository."""
    env = os.environ.get("MINICLOUD_STATE")
    return Path(env).resolve() if env else REPO / ".state" / "minicloud"


def constraints_hash() -> str:
    """Names the venv made from the current ``constraints.txt``."""
    return hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()[:12]


def default_venv_dir() -> Path:
    """Root of the services venvs: ``$MINICLOUD_VENV``, else a cache dir shared by all
    clones on this machine; the venv itself is ``<root>/<constraints_hash()>``.

    Venvs outlive ``down --purge`` and fresh clones (CI), so each is installed once; new pins
    get a new venv beside the old one (venvs cannot be moved, and one in use must not be
    rebuilt under its running services).
    """
    env = os.environ.get("MINICLOUD_VENV")
    if env:
        return Path(env).resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "meridian" / "minicloud-venv"


def venv_env() -> dict[str, str]:
    """Environment for processes of the services venv.

    The venv is installed without byte-compiling (that would compile the projects' large
    test trees too); the services write .pyc files for what they import, on first use.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def port_free(port: int) -> bool:
    """True when nothing listens on (or holds) ``port`` on the loopback address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _pick_base_port(state_dir: Path) -> int:
    """A free block of 100 ports in 20000-29999, first guess derived from the path."""
    start = zlib.crc32(str(state_dir).encode()) % 100
    for k in range(100):
        base = 20000 + ((start + k) % 100) * 100
        if all(port_free(base + off) for off in range(100)):
            return base
    raise SystemExit("minicloud: no free block of 100 ports in 20000-29999")


@dataclass(frozen=True)
class Site:
    """One OpenStack site: its number, names, ports and directories."""

    index: int
    base_port: int
    state_dir: Path

    @property
    def name(self) -> str:
        return f"site{self.index}"

    @property
    def region(self) -> str:
        return "Region" + REGION_WORDS[self.index - 1]

    @property
    def cloud(self) -> str:
        return f"minicloud-{self.name}"

    @property
    def dir(self) -> Path:
        return self.state_dir / self.name

    @property
    def vhost(self) -> str:
        return self.name

    def port(self, service: str) -> int:
        return self.base_port + 10 * self.index + API_SERVICES.index(service)

    def url(self, service: str) -> str:
        suffix = {"keystone": "/v3", "nova": "/v2.1"}.get(service, "")
        return f"http://{HOST}:{self.port(service)}{suffix}"

    def db(self, what: str) -> str:
        """Database name of one of keystone, glance, placement, neutron, nova_api, ..."""
        return f"{what}_s{self.index}"

    def host(self, role: str) -> str:
        """Host name a service reports (``site1-ctl``, ``site1-compute1``)."""
        return f"{self.name}-{role}"


@dataclass
class Layout:
    """A state directory, its recorded ports and secrets, and the services venv."""

    state_dir: Path
    venv: Path
    base_port: int
    secrets: dict[str, str]
    sites_count: int

    @classmethod
    def load(cls, state_dir: Path, venv: Path, *, create: bool) -> Layout:
        """Reads ``state.json``; with ``create``, picks ports and secrets the first time."""
        path = state_dir / "state.json"
        if path.exists():
            data = json.loads(path.read_text())
            return cls(
                state_dir,
                venv,  # the caller's (flag, $MINICLOUD_VENV, default) wins over the record
                data["base_port"],
                data["secrets"],
                data.get("sites", 0),
            )
        if not create:
            raise SystemExit(f"minicloud: no minicloud in {state_dir} (run 'up' first)")
        state_dir.mkdir(parents=True, exist_ok=True)
        names = ("db", "rabbit", "admin", "service", "user")
        layout = cls(
            state_dir,
            venv,
            _pick_base_port(state_dir),
            {n: secrets.token_hex(12) for n in names},
            0,
        )
        layout.save()
        return layout

    def save(self) -> None:
        data = {
            "base_port": self.base_port,
            "secrets": self.secrets,
            "sites": self.sites_count,
            "venv": str(self.venv),
            "ports": self.ports_table(),
        }
        path = self.state_dir / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.chmod(tmp, 0o600)
        tmp.replace(path)

    def ports_table(self) -> dict[str, int]:
        table = {
            "mariadb": self.mariadb_port,
            "rabbitmq": self.amqp_port,
            "erlang-dist": self.dist_port,
            "epmd": self.epmd_port,
        }
        for site in self.sites():
            for svc in API_SERVICES:
                table[f"{site.name}/{svc}"] = site.port(svc)
        return table

    @property
    def mariadb_port(self) -> int:
        return self.base_port

    @property
    def amqp_port(self) -> int:
        return self.base_port + 1

    @property
    def dist_port(self) -> int:
        return self.base_port + 2

    @property
    def epmd_port(self) -> int:
        return self.base_port + 3

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @property
    def clouds_yaml(self) -> Path:
        return self.state_dir / "clouds.yaml"

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def site(self, index: int) -> Site:
        return Site(index, self.base_port, self.state_dir)

    def sites(self) -> list[Site]:
        return [self.site(i) for i in range(1, self.sites_count + 1)]

    def db_url(self, dbname: str) -> str:
        return (
            f"mysql+pymysql://minicloud:{self.secrets['db']}@{HOST}:{self.mariadb_port}"
            f"/{dbname}?charset=utf8"
        )

    def transport_url(self, site: Site) -> str:
        return f"rabbit://minicloud:{self.secrets['rabbit']}@{HOST}:{self.amqp_port}/{site.vhost}"
