"""The placement benchmark's peer: real OpenStack Placement answering ``GET
/allocation_candidates`` over the same hosts Meridian's dry-run plans over.

A Placement of its own for the run, from the minicloud's services venv (the same
``openstack-placement`` the minicloud sites run, under uWSGI with the minicloud's worker
flags: one worker, four threads, but an HTTP/1.1 socket so a client keeps its connection
alive, as Meridian's API does), on a fresh sqlite database with ``noauth2``: the sites'
own Placement is never loaded with thousands of providers. ``load`` takes the inventories
the federation's agents reported (read from etcd): each host a root provider, each NUMA
cell a child with PCPU, VCPU (allocation ratio 4), MEMORY_MB, ``CUSTOM_HUGEPAGES_2M``,
``CUSTOM_HUGEPAGES_1G`` and ``SRIOV_NET_VF`` with its physnet as a trait.

The request is the one-member equivalent of the vFirewall sample: 4 dedicated cores,
8 GiB in 1 GiB pages and 2 VFs on physnet1, all from one NUMA cell (one granular group),
``limit=1000`` as Nova's scheduler asks (``max_placement_results``). Placement answers only
"which hosts fit"; Meridian's dry-run also admits, scores, picks and explains.

The services venv is the minicloud's (``deploy/minicloud``), installed here if missing
(~2 minutes, ~0.7 GB); ``MERIDIAN_PLACEMENT_VENV`` names another. Without one the peer
cannot run and the benchmark fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from broker.models.inventory import Host

REPO = Path(__file__).resolve().parents[2]
MINICLOUD = REPO / "deploy" / "minicloud"
VERSION = "placement 1.36"
HEADERS = {"X-Auth-Token": "admin", "OpenStack-API-Version": VERSION}
REQUEST = {
    "resources1": "PCPU:4,MEMORY_MB:8192,CUSTOM_HUGEPAGES_1G:8,SRIOV_NET_VF:2",
    "required1": "CUSTOM_PHYSNET_PHYSNET1",
    "limit": "1000",
}
CPU_ALLOCATION_RATIO = 4.0  # as the broker's snapshot and the sim driver count shared vCPUs
_FIND_VENV = """
import sys
sys.path.insert(0, sys.argv[1])
from mc import install, layout
venv = layout.default_venv_dir() / layout.constraints_hash()
install.services_venv(venv, lambda m: print(m, file=sys.stderr))
print(venv)
"""


class PeerUnavailable(Exception):
    """No services venv to run Placement from; the message says how to get one."""


def services_venv() -> Path:
    """``MERIDIAN_PLACEMENT_VENV``, else the minicloud's services venv (installed if
    missing, by the minicloud's own installer); PeerUnavailable when neither works."""
    env_venv = os.environ.get("MERIDIAN_PLACEMENT_VENV")
    if env_venv:
        venv = Path(env_venv)
    else:
        done = subprocess.run(
            [sys.executable, "-c", _FIND_VENV, str(MINICLOUD)],
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
        )
        if done.returncode != 0:
            raise PeerUnavailable(
                f"installing the minicloud services venv failed: {done.stderr[-1500:]}"
            )
        venv = Path(done.stdout.strip().splitlines()[-1])
    if not (venv / "bin" / "placement-manage").exists():
        raise PeerUnavailable(
            f"{venv} has no openstack-placement: run 'deploy/minicloud/minicloud up --sites 1' "
            "once (or set MERIDIAN_PLACEMENT_VENV)"
        )
    return venv


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Placement:
    """A private Placement API: started, loaded, asked, stopped."""

    def __init__(self, venv: Path) -> None:
        self.venv = venv
        self.dir = Path(tempfile.mkdtemp(prefix="meridian-placement-"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 300.0) -> None:
        (self.dir / "placement.conf").write_text(
            "[DEFAULT]\ndebug = false\n"
            f"[placement_database]\nconnection = sqlite:///{self.dir / 'placement.sqlite'}\n"
            "[api]\nauth_strategy = noauth2\n"
        )
        env = {**os.environ, "OS_PLACEMENT_CONFIG_DIR": str(self.dir)}
        bin_ = self.venv / "bin"
        subprocess.run(
            [
                str(bin_ / "placement-manage"),
                f"--config-file={self.dir / 'placement.conf'}",
                "db",
                "sync",
            ],
            check=True,
            capture_output=True,
            env=env,
            timeout=timeout,
        )
        log = (self.dir / "uwsgi.log").open("wb")
        self.proc = subprocess.Popen(
            [
                str(bin_ / "uwsgi"),
                "--http11-socket",
                f"127.0.0.1:{self.port}",
                "--module",
                "placement.wsgi.api:application",
                "--virtualenv",
                str(self.venv),
                "--master",
                "--processes",
                "1",
                "--threads",
                "4",
                "--enable-threads",
                "--lazy-apps",
                "--need-app",
                "--die-on-term",
                "--buffer-size",
                "65535",
                "--disable-logging",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.dir / "uwsgi.log").read_text()[-2000:]
                raise RuntimeError(f"placement exited: {tail}")
            try:
                if httpx.get(self.url + "/", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("placement did not answer in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- loading ---------------------------------------------------------------------------

    def _call(self, client: httpx.Client, method: str, path: str, body: Any = None) -> Any:
        resp = client.request(method, self.url + path, json=body, headers=HEADERS)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:300]}")
        return resp.json() if resp.content else None

    def _host(self, client: httpx.Client, host: Host) -> None:
        root = str(uuid.uuid4())
        self._call(client, "POST", "/resource_providers", {"name": host.name, "uuid": root})
        for cell in host.cells:
            child = str(uuid.uuid4())
            made = self._call(
                client,
                "POST",
                "/resource_providers",
                {"name": f"{host.name}-numa{cell.id}", "uuid": child, "parent_provider_uuid": root},
            )
            inv: dict[str, dict[str, Any]] = {
                "PCPU": {"total": cell.pcpus_total},
                "VCPU": {
                    "total": cell.cpus_total - cell.pcpus_total,
                    "allocation_ratio": CPU_ALLOCATION_RATIO,
                },
                "MEMORY_MB": {"total": cell.memory_mb},
            }
            for pages in cell.hugepages:
                name = {2048: "CUSTOM_HUGEPAGES_2M", 1048576: "CUSTOM_HUGEPAGES_1G"}.get(
                    pages.page_size_kb
                )
                if name and pages.total:
                    inv[name] = {"total": pages.total}
            vfs = sum(p.vfs_total for p in cell.sriov)
            if vfs:
                inv["SRIOV_NET_VF"] = {"total": vfs}
            inv = {rc: v for rc, v in inv.items() if v["total"] > 0}
            done = self._call(
                client,
                "PUT",
                f"/resource_providers/{child}/inventories",
                {"resource_provider_generation": made["generation"], "inventories": inv},
            )
            traits = sorted({f"CUSTOM_PHYSNET_{p.physnet.upper()}" for p in cell.sriov})
            self._call(
                client,
                "PUT",
                f"/resource_providers/{child}/traits",
                {
                    "resource_provider_generation": done["resource_provider_generation"],
                    "traits": [*traits, "HW_NUMA_ROOT"],
                },
            )

    def load(self, hosts: Sequence[Host]) -> float:
        """Create every host (a root and one child per NUMA cell); returns seconds taken
        (one writer: sqlite refuses concurrent ones)."""
        t0 = time.perf_counter()
        with httpx.Client(timeout=60.0) as client:
            physnets = {p.physnet for h in hosts for c in h.cells for p in c.sriov}
            for physnet in sorted(physnets):
                self._call(client, "PUT", f"/traits/CUSTOM_PHYSNET_{physnet.upper()}")
            for rc in ("CUSTOM_HUGEPAGES_2M", "CUSTOM_HUGEPAGES_1G"):
                self._call(client, "PUT", f"/resource_classes/{rc}")
            for host in hosts:
                self._host(client, host)
        return time.perf_counter() - t0

    def ask(self, n: int, concurrency: int = 1) -> tuple[list[float], float, int]:
        """``n`` requests from ``concurrency`` keep-alive clients; returns each request's
        time, the wall time of all, and the candidates of the last answer."""
        found = [0]

        def send(client: httpx.Client) -> None:
            resp = client.get(self.url + "/allocation_candidates", params=REQUEST)
            if resp.status_code != 200:
                raise RuntimeError(f"allocation_candidates: {resp.status_code} {resp.text[:300]}")
            found[0] = len(resp.json()["allocation_requests"])

        times, wall = drive(
            n, concurrency, lambda: httpx.Client(timeout=120.0, headers=HEADERS), send
        )
        return times, wall, found[0]


def drive(
    n: int, concurrency: int, make: Callable[[], httpx.Client], send: Callable[[httpx.Client], None]
) -> tuple[list[float], float]:
    """``n`` calls of ``send`` spread over ``concurrency`` threads, each with its own
    keep-alive client; returns every call's seconds and the wall time of all."""

    def worker(count: int) -> list[float]:
        times: list[float] = []
        with make() as client:
            for _ in range(count):
                t0 = time.perf_counter()
                send(client)
                times.append(time.perf_counter() - t0)
        return times

    shares = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        parts = list(pool.map(worker, shares))
    return [t for part in parts for t in part], time.perf_counter() - t0
