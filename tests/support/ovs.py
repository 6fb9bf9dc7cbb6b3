"""A real Open vSwitch for tests: ``ovsdb-server`` + ``ovs-vswitchd`` in a directory of their own.

Each instance has its own run, db and log directories (``OVS_RUNDIR``/``OVS_DBDIR``/
``OVS_LOGDIR``), listens on a unix socket there and never touches the machine's own OVS.
There is no kernel module here, so bridges use the userspace datapath (``netdev``, the
datapath OVS-DPDK uses). Both daemons run in the foreground as our children, so stopping
them is killing two known pids.

    ovs = start()                 # raises OvsNotFound saying how to get it
    ovs.vsctl("add-br", "x", "--", "set", "bridge", "x", "datapath_type=netdev")
    ovs.stop()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

NOT_FOUND = (
    "Open vSwitch not found: run deploy/dev/bootstrap.sh as root "
    "(installs Debian openvswitch-switch, iperf3, ethtool, iputils-ping)"
)
SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


class OvsNotFound(RuntimeError):
    pass


def require_root_ovs() -> None:
    """Fail (never skip) when this machine cannot run a private OVS."""
    missing = [
        b
        for b in ("ovsdb-server", "ovs-vswitchd", "ovsdb-tool", "ovs-vsctl")
        if not shutil.which(b)
    ]
    if missing or not SCHEMA.exists():
        raise OvsNotFound(f"{NOT_FOUND}; missing: {', '.join(missing) or SCHEMA}")
    if os.geteuid() != 0:
        raise OvsNotFound("Open vSwitch tests need root (network namespaces, tap devices)")


@dataclass
class Ovs:
    """One running private OVS; ``remote`` is what ovsdbapp connects to."""

    base: Path
    server: subprocess.Popen[bytes]
    switchd: subprocess.Popen[bytes]

    @property
    def rundir(self) -> Path:
        return self.base / "run"

    @property
    def remote(self) -> str:
        return f"unix:{self.rundir / 'db.sock'}"

    def env(self) -> dict[str, str]:
        return _env(self.base)

    def vsctl(self, *args: str) -> str:
        """``ovs-vsctl`` against this instance (what an operator's hand change looks like)."""
        done = subprocess.run(
            ["ovs-vsctl", f"--db={self.remote}", "--timeout=20", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"ovs-vsctl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    def ofctl(self, *args: str) -> str:
        done = subprocess.run(
            ["ovs-ofctl", *args], env=self.env(), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"ovs-ofctl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for name in ("ovsdb-server.log", "ovs-vswitchd.log"):
            path = self.base / "log" / name
            if path.exists():
                out.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-lines:]))
        return "\n".join(out)

    def stop(self) -> None:
        for proc in (self.switchd, self.server):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def running() -> Iterator[Ovs]:
    """A private OVS for a test fixture: the test FAILS (never skips) saying how to get it."""
    try:
        instance = start()
    except OvsNotFound as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield instance
    finally:
        instance.stop()


def start(base: Path | None = None) -> Ovs:
    """Create a database, start both daemons and wait until vswitchd has configured."""
    require_root_ovs()
    base = base or Path(tempfile.mkdtemp(prefix="meridian-ovs-"))
    for sub in ("run", "db", "log"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    db = base / "db" / "conf.db"
    subprocess.run(["ovsdb-tool", "create", str(db), str(SCHEMA)], check=True)
    run = base / "run"
    env = _env(base)
    server = subprocess.Popen(
        [
            "ovsdb-server",
            str(db),
            f"--remote=punix:{run / 'db.sock'}",
            f"--unixctl={run / 'ovsdb-server.ctl'}",
            f"--log-file={base / 'log' / 'ovsdb-server.log'}",
            "--no-chdir",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(run / "db.sock", server, "ovsdb-server")
    switchd = subprocess.Popen(
        [
            "ovs-vswitchd",
            f"unix:{run / 'db.sock'}",
            f"--unixctl={run / 'ovs-vswitchd.ctl'}",
            f"--log-file={base / 'log' / 'ovs-vswitchd.log'}",
            "--no-chdir",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ovs = Ovs(base=base, server=server, switchd=switchd)
    try:
        ovs.vsctl("init")  # waits for vswitchd to apply the (empty) configuration
    except RuntimeError as exc:
        tail = ovs.log_tail()
        ovs.stop()
        raise OvsNotFound(f"ovs-vswitchd did not start: {exc}\n{tail}") from exc
    return ovs


def _env(base: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OVS_RUNDIR": str(base / "run"),
        "OVS_DBDIR": str(base / "db"),
        "OVS_LOGDIR": str(base / "log"),
    }


def _wait_for(path: Path, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise OvsNotFound(f"{what} did not create {path} (exit {proc.poll()})")
        time.sleep(0.05)
