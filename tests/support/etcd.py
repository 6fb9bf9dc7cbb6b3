"""Real etcd for tests: one member or a small cluster on free loopback ports.

Each member gets its own temporary data directory and log file; TLS (server certificate
plus ``--client-cert-auth``) uses certificates made with ``trustme``. Nothing is mocked:
tests that need etcd talk to the real thing (DESIGN.md, "Tests").

    cluster = start_single()            # or start_cluster(3), start_single(tls=True)
    store = EtcdStore.from_settings(cluster.settings(root="/t/"))
    cluster.kill(0); cluster.restart(0)
    cluster.cleanup()
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from broker.settings import EtcdSettings

NOT_FOUND = "etcd not found: run deploy/dev/bootstrap.sh (installs Debian etcd-server)"
# fast raft for chaos tests: a new leader in well under a second after a kill -9
FAST_RAFT = ("--heartbeat-interval=50", "--election-timeout=500")


class EtcdNotFound(RuntimeError):
    pass


def etcd_binary() -> Path:
    found = shutil.which("etcd")  # Debian's etcd-server installs it on PATH
    if found is None:
        raise EtcdNotFound(NOT_FOUND)
    return Path(found)


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on now (all held open together, so they are distinct)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


@dataclass(frozen=True)
class TlsFiles:
    ca_file: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def make_tls(directory: Path) -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("meridian-broker-test")
    files = TlsFiles(
        ca_file=str(directory / "ca.pem"),
        server_cert=str(directory / "server.pem"),
        server_key=str(directory / "server.key"),
        client_cert=str(directory / "client.pem"),
        client_key=str(directory / "client.key"),
    )
    ca.cert_pem.write_to_path(files.ca_file)
    server.cert_chain_pems[0].write_to_path(files.server_cert)
    server.private_key_pem.write_to_path(files.server_key)
    client.cert_chain_pems[0].write_to_path(files.client_cert)
    client.private_key_pem.write_to_path(files.client_key)
    return files


def _stopped(task: Path) -> bool:
    """Whether a thread (``/proc/<pid>/task/<tid>``) is stopped (state T) or gone."""
    try:
        stat = (task / "stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    args: list[str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def freeze(self, timeout: float = 10.0) -> None:
        """SIGSTOP, and wait until every thread of the member is stopped: the signal only
        marks them, and a thread between syscalls may still answer a request or two."""
        assert self.process is not None
        self.signal(signal.SIGSTOP)
        tasks = Path(f"/proc/{self.process.pid}/task")
        deadline = time.monotonic() + timeout
        while not all(_stopped(task) for task in tasks.iterdir()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd member {self.name} did not stop within {timeout} s")
            time.sleep(0.005)

    def kill(self) -> None:
        """kill -9, and reap."""
        if self.process is not None:
            self.signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM (clean shutdown), kill -9 if it takes too long."""
        if self.process is None:
            return
        self.signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Cluster:
    """A running etcd of one or more members; ``cleanup`` kills it and removes its files."""

    workdir: Path
    members: list[Member]
    tls: TlsFiles | None = None
    _ssl: ssl.SSLContext | None = field(default=None, repr=False)

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(m.endpoint for m in self.members)

    def settings(
        self, root: str = "/meridian/v1/", *, timeout: float = 2.0, client_cert: bool = True
    ) -> EtcdSettings:
        """EtcdSettings for this cluster (with the client certificate when TLS)."""
        if self.tls is None:
            return EtcdSettings(endpoints=self.endpoints, root=root, timeout=timeout, threads=4)
        return EtcdSettings(
            endpoints=self.endpoints,
            root=root,
            timeout=timeout,
            threads=4,
            ca_file=self.tls.ca_file,
            cert_file=self.tls.client_cert if client_cert else "",
            key_file=self.tls.client_key if client_cert else "",
        )

    def healthy(self, member: Member) -> bool:
        scheme = "https" if self.tls else "http"
        url = f"{scheme}://{member.endpoint}/health"
        try:
            with urllib.request.urlopen(url, timeout=1, context=self._ssl) as answer:
                return bool(json.loads(answer.read()).get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_healthy(self, timeout: float = 30.0, members: list[Member] | None = None) -> None:
        deadline = time.monotonic() + timeout
        for member in members or [m for m in self.members if m.running]:
            while not self.healthy(member):
                if not member.running:
                    raise RuntimeError(
                        f"etcd {member.name} exited during start-up:\n{member.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"etcd {member.name} not healthy after {timeout}s:\n{member.log_tail()}"
                    )
                time.sleep(0.05)

    def kill(self, index: int) -> None:
        self.members[index].kill()

    def stop(self, index: int) -> None:
        self.members[index].stop()

    def restart(self, index: int, *, wait: bool = True) -> None:
        """Start a stopped or killed member again (same ports, same data)."""
        member = self.members[index]
        if member.running:
            raise RuntimeError(f"etcd {member.name} is still running")
        member.start()
        if wait:
            self.wait_healthy(members=[member])

    def member_for(self, endpoint: str) -> int:
        return self.endpoints.index(endpoint)

    def cleanup(self) -> None:
        for member in self.members:
            with contextlib.suppress(Exception):
                member.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _client_ssl(tls: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca_file)
    context.load_cert_chain(tls.client_cert, tls.client_key)
    return context


def start(size: int = 1, *, tls: bool = False, fast: bool = False) -> Cluster:
    """Start ``size`` members on loopback and wait until the cluster is healthy."""
    binary = etcd_binary()
    workdir = Path(tempfile.mkdtemp(prefix="meridian-etcd-"))
    files = make_tls(workdir) if tls else None
    scheme = "https" if files else "http"
    ports = free_ports(2 * size)
    names = [f"m{i}" for i in range(size)]
    initial = ",".join(
        f"{name}=http://127.0.0.1:{ports[2 * i + 1]}" for i, name in enumerate(names)
    )
    members = []
    for i, name in enumerate(names):
        client_url = f"{scheme}://127.0.0.1:{ports[2 * i]}"
        peer_url = f"http://127.0.0.1:{ports[2 * i + 1]}"
        args = [
            str(binary),
            f"--name={name}",
            f"--data-dir={workdir / name}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster={initial}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token=meridian-{workdir.name}",
            "--log-level=warn",
        ]
        if fast:
            args += FAST_RAFT
        if files:
            args += [
                f"--cert-file={files.server_cert}",
                f"--key-file={files.server_key}",
                f"--trusted-ca-file={files.ca_file}",
                "--client-cert-auth",
            ]
        log_path = workdir / f"{name}.log"
        members.append(Member(name, ports[2 * i], ports[2 * i + 1], workdir / name, log_path, args))
    cluster = Cluster(workdir, members, files, _client_ssl(files) if files else None)
    try:
        for member in members:
            member.start()
        cluster.wait_healthy()
    except BaseException:
        cluster.cleanup()
        raise
    return cluster


def start_single(*, tls: bool = False) -> Cluster:
    return start(1, tls=tls)


def start_cluster(size: int = 3) -> Cluster:
    """A cluster for chaos tests, with fast raft timing (FAST_RAFT)."""
    return start(size, fast=True)
