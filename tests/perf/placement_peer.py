"""The placement benchmark's peer: real OpenStack Placement answering ``GET
/allocation_candidates`` over as many compute hosts as Meridian decides over.

A Placement of its own for the run, from the minicloud's services venv (the same
``openstack-placement`` the minicloud sites run, under uWSGI with the minicloud's flags:
one worker, four threads), on a fresh sqlite database with ``noauth2``: the sites' own
Placement is never loaded with thousands of providers that their agents would report as
hosts. Each host is a root provider with two NUMA-cell children holding PCPU, VCPU,
MEMORY_MB, ``CUSTOM_HUGEPAGES_1G`` and ``SRIOV_NET_VF`` (trait ``CUSTOM_PHYSNET_PHYSNET1``)
— the shape of the benchmark's sim hosts.

The request is the one-member equivalent of the vFirewall sample: 4 dedicated cores,
8 GiB in 1 GiB pages and 2 VFs on physnet1, all from one NUMA cell (one granular group),
``limit=1000`` as Nova's scheduler asks (``max_placement_results``). Placement answers only
"which hosts fit"; Meridian's decision also scores, picks and plans redundancy.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
MINICLOUD = REPO / "deploy" / "minicloud" / "minicloud"
VERSION = "placement 1.36"
HEADERS = {"X-Auth-Token": "admin", "OpenStack-API-Version": VERSION}
REQUEST = {
    "resources1": "PCPU:4,MEMORY_MB:8192,CUSTOM_HUGEPAGES_1G:8,SRIOV_NET_VF:2",
    "required1": "CUSTOM_PHYSNET_PHYSNET1",
    "limit": "1000",
}
CELL = {  # as tests.perf.placement.SHAPE
    "VCPU": 48,
    "PCPU": 40,
    "MEMORY_MB": 98304,
    "CUSTOM_HUGEPAGES_1G": 64,
    "SRIOV_NET_VF": 64,
}


class PeerUnavailable(Exception):
    """No minicloud services venv to run Placement from; the message says how to get one."""


def services_venv() -> Path:
    """The minicloud's services venv (``minicloud status --json``), or PeerUnavailable."""
    env_venv = os.environ.get("MERIDIAN_PLACEMENT_VENV")
    if env_venv:
        return Path(env_venv)
    states = [os.environ.get("MINICLOUD_STATE", ""), str(REPO / ".state/minicloud-openstack-tier")]
    venv = Path()
    for state in [s for s in states if s] + [""]:
        args = ["--state-dir", state] if state else []
        done = subprocess.run(
            [str(MINICLOUD), *args, "status", "--json"], capture_output=True, text=True,
            check=False,
        )
        try:
            venv = Path(json.loads(done.stdout)["venv"])
            break
        except (ValueError, KeyError, TypeError):
            continue
    if not (venv / "bin" / "placement-manage").exists():
        raise PeerUnavailable(
            "no minicloud services venv with openstack-placement: run "
            "'deploy/minicloud/minicloud up --sites 1' once (or set MERIDIAN_PLACEMENT_VENV)"
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
            [str(bin_ / "placement-manage"), f"--config-file={self.dir / 'placement.conf'}",
             "db", "sync"],
            check=True, capture_output=True, env=env, timeout=timeout,
        )
        log = (self.dir / "uwsgi.log").open("wb")
        self.proc = subprocess.Popen(
            [str(bin_ / "uwsgi"), "--http-socket", f"127.0.0.1:{self.port}",
             "--module", "placement.wsgi.api:application", "--virtualenv", str(self.venv),
             "--add-header", "Connection: close", "--master", "--processes", "1",
             "--threads", "4", "--enable-threads", "--lazy-apps", "--need-app",
             "--die-on-term", "--buffer-size", "65535", "--disable-logging"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
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

    def _host(self, client: httpx.Client, i: int) -> None:
        root = str(uuid.uuid4())
        self._call(client, "POST", "/resource_providers", {"name": f"bench-{i:05d}", "uuid": root})
        for c in range(2):
            cell = str(uuid.uuid4())
            made = self._call(
                client, "POST", "/resource_providers",
                {"name": f"bench-{i:05d}-numa{c}", "uuid": cell, "parent_provider_uuid": root},
            )
            inv = {rc: {"total": n} for rc, n in CELL.items()}
            done = self._call(
                client, "PUT", f"/resource_providers/{cell}/inventories",
                {"resource_provider_generation": made["generation"], "inventories": inv},
            )
            self._call(
                client, "PUT", f"/resource_providers/{cell}/traits",
                {"resource_provider_generation": done["resource_provider_generation"],
                 "traits": ["CUSTOM_PHYSNET_PHYSNET1", "HW_NUMA_ROOT"]},
            )

    def load(self, hosts: int, workers: int = 1) -> float:
        """Create ``hosts`` hosts (3 providers each); returns seconds taken (one writer:
        sqlite refuses concurrent ones)."""
        t0 = time.perf_counter()
        with httpx.Client(timeout=60.0) as client:
            self._call(client, "PUT", "/traits/CUSTOM_PHYSNET_PHYSNET1")
            self._call(client, "PUT", "/resource_classes/CUSTOM_HUGEPAGES_1G")
        with ThreadPoolExecutor(workers) as pool:
            clients = [httpx.Client(timeout=60.0) for _ in range(workers)]
            try:
                list(pool.map(lambda i: self._host(clients[i % workers], i), range(hosts)))
            finally:
                for c in clients:
                    c.close()
        return time.perf_counter() - t0

    def ask(self, n: int) -> tuple[list[float], int]:
        """``n`` sequential requests; returns their times and the candidates of the last."""
        times: list[float] = []
        found = 0
        with httpx.Client(timeout=120.0) as client:
            for _ in range(n):
                t0 = time.perf_counter()
                resp = client.get(self.url + "/allocation_candidates", params=REQUEST,
                                  headers=HEADERS)
                times.append(time.perf_counter() - t0)
                if resp.status_code != 200:
                    raise RuntimeError(f"allocation_candidates: {resp.status_code} {resp.text}")
                found = len(resp.json()["allocation_requests"])
        return times, found
