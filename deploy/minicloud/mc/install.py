"""Installs what the minicloud runs on, only when missing.

- Debian packages for MariaDB, RabbitMQ (and a C compiler for uWSGI) via apt-get, with
  one ``apt-get update`` first;
- the services venv, from ``constraints.txt``. A stamp in the venv records the hash of the
  constraints and the Python version; while it matches, nothing is installed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import layout
from .procs import StartError

# What the services venv holds; constraints.txt pins these and everything below them.
REQUIREMENTS = [
    "keystone",
    "glance",
    "openstack-placement",
    "nova",
    "neutron",
    "neutron-vpnaas",
    "networking-bgpvpn",
    "PyMySQL",
    "uwsgi",
    "openstacksdk",
    "python-openstackclient",
]

MARIADBD = "/usr/sbin/mariadbd"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
EPMD = "/usr/bin/epmd"


def debian_packages(say) -> None:
    """apt-get installs MariaDB / RabbitMQ / a compiler when their binaries are absent."""
    need = []
    if not (os.path.exists(MARIADBD) and shutil.which("mariadb-install-db")):
        need.append("mariadb-server")
    if not (os.path.exists(RABBITMQ_SERVER) and os.path.exists(EPMD)):
        need.append("rabbitmq-server")
    if not shutil.which("cc"):
        need.append("gcc")  # uWSGI builds from source
    if not need:
        return
    if os.geteuid() != 0:
        raise StartError(f"need Debian packages {need}: run as root or install them")
    say(f"installing Debian packages: {' '.join(need)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need],
    ):
        res = subprocess.run(argv, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise StartError(f"{' '.join(argv)} failed:\n{(res.stdout + res.stderr)[-3000:]}")


def _stamp_value() -> str:
    h = hashlib.sha256(layout.CONSTRAINTS.read_bytes())
    h.update(" ".join(REQUIREMENTS).encode())
    h.update(sys.version.encode())
    return h.hexdigest()


def venv_ready(venv: Path) -> bool:
    stamp = venv / ".minicloud-stamp"
    return stamp.exists() and stamp.read_text().strip() == _stamp_value()


def _pip(python: Path, log: Path, args: list[str]) -> subprocess.Popen:
    out = open(log, "w")
    return subprocess.Popen(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-compile",
            "--progress-bar",
            "off",
            "-c",
            str(layout.CONSTRAINTS),
            *args,
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=layout.venv_env(),
    )


def services_venv(venv: Path, say) -> None:
    """Creates/updates the services venv from constraints.txt unless its stamp matches.

    uWSGI builds from source (~40 s): a second pip builds it beside the main install."""
    if venv_ready(venv):
        return
    python = venv / "bin" / "python"
    if not python.exists():
        say(f"creating services venv {venv}")
        venv.parent.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True
        )
        if res.returncode != 0:
            raise StartError(f"python -m venv failed (python3-venv missing?):\n{res.stderr}")
    say("installing OpenStack services into the venv (pinned; ~1.5 min without pip cache)")
    main_log, uwsgi_log = venv / "pip.log", venv / "pip-uwsgi.log"
    jobs = [
        (_pip(python, main_log, [r for r in REQUIREMENTS if r != "uwsgi"]), main_log),
        (_pip(python, uwsgi_log, ["--no-deps", "uwsgi"]), uwsgi_log),
    ]
    for proc, log in jobs:
        if proc.wait() != 0:
            raise StartError("pip install into the services venv failed", log)
    (venv / ".minicloud-stamp").write_text(_stamp_value() + "\n")
    say("services venv ready")
