"""Detached service processes: start, health waits, status and stop, by pid file.

Each service runs in its own session (``setsid``), so it outlives the command that started
it and ``down`` can stop its whole process group. A pid file records the pid, the
process's start time (so a recycled pid is never mistaken for ours or killed) and a
fingerprint of what it was started with (argv, environment, config files): ``up`` restarts
a running service only when that fingerprint changed. Any failure raises ``StartError``
carrying the tail of the service's log; so does a port held by a process that is not ours
(its answers would pass the health check).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import layout

TAIL_LINES = 40
PORT_RELEASE_WAIT = 5.0


class StartError(Exception):
    """A step or service failed; ``log`` names the file whose tail explains it."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log

    def report(self) -> str:
        text = f"minicloud: FAILED: {self}"
        if self.log is not None:
            text += f"\n--- last {TAIL_LINES} lines of {self.log} ---\n{tail(self.log)}"
        return text


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file (empty when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200_000))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(data.splitlines()[-lines:])


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: identifies a process across pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass
class Service:
    """A long-running process of the minicloud and how to tell it is healthy.

    ``port`` given: healthy when it accepts TCP (``http`` too: when it answers HTTP).
    No port: healthy when it is still alive ``settle`` seconds after start.
    """

    name: str  # "mariadb", "site1/keystone", ...
    argv: list[str]
    run_dir: Path
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    config_files: list[Path] = field(default_factory=list)
    port: int | None = None
    http: bool = False
    timeout: float = 90.0
    settle: float = 3.0

    @property
    def slug(self) -> str:
        return self.name.replace("/", "-")

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.slug}.pid"

    @property
    def log(self) -> Path:
        return self.log_dir / f"{self.slug}.log"

    def fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps([self.argv, sorted(self.env.items())]).encode())
        for path in self.config_files:
            h.update(path.read_bytes() if path.exists() else b"-")
        return h.hexdigest()[:16]


def read_pid(pid_file: Path) -> dict | None:
    """The pid record when its process is alive and is the one we started, else None."""
    try:
        rec = json.loads(pid_file.read_text())
    except (OSError, ValueError):
        return None
    if _start_time(rec["pid"]) != rec.get("start") or _zombie(rec["pid"]):
        return None
    return rec


def running(svc: Service) -> bool:
    return read_pid(svc.pid_file) is not None


def _claim_port(svc: Service, wait: float = PORT_RELEASE_WAIT) -> None:
    """Fails fast when another process holds ``svc``'s port: the health check would
    otherwise take that process's answers for ours (another minicloud, a stray server).
    Waits briefly first, for a predecessor that was just stopped to release it."""
    if svc.port is None:
        return
    deadline = time.monotonic() + wait
    while not layout.port_free(svc.port):
        if time.monotonic() > deadline:
            raise StartError(
                f"{svc.name}: port {svc.port} is held by another process (not one this state "
                "dir started; another minicloud on the same ports?)"
            )
        time.sleep(0.2)


def start(svc: Service) -> None:
    """Starts ``svc`` detached, appending to its log; returns at once."""
    _claim_port(svc)
    svc.run_dir.mkdir(parents=True, exist_ok=True)
    svc.log_dir.mkdir(parents=True, exist_ok=True)
    env = {**layout.venv_env(), **svc.env}
    with open(svc.log, "ab") as log:
        log.write(
            f"\n===== minicloud start {time.strftime('%F %T')}: {' '.join(svc.argv)}\n".encode()
        )
        log.flush()
        proc = subprocess.Popen(
            svc.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            cwd=svc.run_dir,
        )
    rec = {
        "pid": proc.pid,
        "start": _start_time(proc.pid),
        "argv": svc.argv,
        "fingerprint": svc.fingerprint(),
        "port": svc.port,
    }
    svc.pid_file.write_text(json.dumps(rec))


def _answers(port: int, http: bool) -> bool:
    if not http:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return True
        except OSError:
            return False
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the app loaded
    except (OSError, ValueError):
        return False


def wait_healthy(svc: Service) -> None:
    """Waits until ``svc`` is healthy; raises StartError (with its log) when it died or
    did not become healthy within its timeout."""
    deadline = time.monotonic() + svc.timeout
    started = time.monotonic()
    while True:
        if not running(svc):
            raise StartError(f"{svc.name} exited during start", svc.log)
        if svc.port is not None:
            ok = _answers(svc.port, svc.http)
        else:
            ok = time.monotonic() - started >= svc.settle
        if ok:
            return
        if time.monotonic() > deadline:
            what = f"port {svc.port}" if svc.port else "readiness"
            raise StartError(f"{svc.name} not healthy after {svc.timeout:.0f}s ({what})", svc.log)
        time.sleep(0.5)


def ensure(svc: Service) -> bool:
    """Starts ``svc`` unless it runs with the same fingerprint; True when (re)started.

    Does not wait: call ``wait_healthy`` after starting a batch."""
    rec = read_pid(svc.pid_file)
    if rec is not None:
        if rec.get("fingerprint") == svc.fingerprint():
            return False
        stop(svc.pid_file)
    start(svc)
    return True


def stop(pid_file: Path, timeout: float = 20.0) -> bool:
    """Stops the process group recorded in ``pid_file`` (TERM, then KILL); True if it ran."""
    rec = read_pid(pid_file)
    pid_file.unlink(missing_ok=True)
    if rec is None:
        return False
    pid = rec["pid"]
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _start_time(pid) != rec["start"] or _zombie(pid):
            break
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)  # leftovers of the group, or a stuck leader
    except ProcessLookupError:
        pass
    return True


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
