"""Installs what the minicloud runs on, only when missing.

- Debian packages for MariaDB and RabbitMQ via apt-get, with one ``apt-get update`` first;
- the services venv, from ``constraints.txt``, made with the ``python3`` running this tool,
  in a directory named by the constraints' hash (``layout.constraints_hash``); a stamp
  file marks it complete.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import threading
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
    # the uWSGI project's binary wheel: the same server as the "uwsgi" sdist, without a
    # ~40 s (55 CPU-s) C build on every fresh machine
    "pyuwsgi",
    "openstacksdk",
    "python-openstackclient",
]

MARIADBD = "/usr/sbin/mariadbd"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
EPMD = "/usr/bin/epmd"


def debian_packages(say) -> None:
    """apt-get installs MariaDB / RabbitMQ when their binaries are absent."""
    need = []
    if not (os.path.exists(MARIADBD) and shutil.which("mariadb-install-db")):
        need.append("mariadb-server")
    if not (os.path.exists(RABBITMQ_SERVER) and os.path.exists(EPMD)):
        need.append("rabbitmq-server")
    if not need:
        return
    if os.geteuid() != 0:
        raise StartError(f"need Debian packages {need}: run as root or install them")
    _apt(need, say)


_apt_lock = threading.Lock()
_apt_updated = False


def _apt(packages: list[str], say) -> None:
    """apt-get install, after one ``apt-get update`` per run (serialised: dpkg has one lock)."""
    global _apt_updated
    say(f"installing Debian packages: {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _apt_lock:
        wait = ["-o", "DPkg::Lock::Timeout=300"]  # another apt-get may hold the lock
        steps = [] if _apt_updated else [["apt-get", *wait, "update", "-qq"]]
        steps.append(
            ["apt-get", *wait, "install", "-y", "-qq", "--no-install-recommends", *packages]
        )
        for argv in steps:
            res = subprocess.run(argv, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                raise StartError(f"{' '.join(argv)} failed:\n{(res.stdout + res.stderr)[-3000:]}")
        _apt_updated = True


def venv_ready(venv: Path) -> bool:
    return (venv / ".minicloud-ready").exists()


def services_venv(venv: Path, say) -> None:
    """Creates the services venv from constraints.txt unless it is there and complete.

    No byte-compiling at install (see ``layout.venv_env``). Serialised on a lock beside
    the venv: state dirs share it."""
    if venv_ready(venv):
        return
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not venv_ready(venv):
            _build_venv(venv, say)


def _build_venv(venv: Path, say) -> None:
    if venv.exists():  # an install that did not finish
        shutil.rmtree(venv)
    say(f"creating services venv {venv}")
    python = venv / "bin" / "python"
    argv = [sys.executable, "-m", "venv", str(venv)]
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0 and sys.executable.startswith("/usr/bin/") and os.geteuid() == 0:
        _apt(["python3-venv"], say)  # Debian's python3 ships venv without ensurepip
        shutil.rmtree(venv, ignore_errors=True)
        res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        raise StartError(f"python -m venv failed (python3-venv missing?):\n{res.stderr}")
    say("installing OpenStack services into the venv (pinned; ~1-2 min without pip cache)")
    log = venv / "pip.log"
    argv = [str(python), "-m", "pip", "install", "--no-compile", "--progress-bar", "off"]
    argv += ["-c", str(layout.CONSTRAINTS), *REQUIREMENTS]
    with open(log, "w") as out:
        res = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=layout.venv_env())
    if res.returncode != 0:
        raise StartError("pip install into the services venv failed", log)
    (venv / ".minicloud-ready").write_text(f"{layout.CONSTRAINTS.name} {venv.name}\n")
    say("services venv ready")
