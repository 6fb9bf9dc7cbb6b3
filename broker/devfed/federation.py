"""Starts and stops a whole local federation under one state directory.

Layout of the state directory::

    pki/                 CA, broker and site certificates (keys 0600)
    pki/etcd/            etcd's own CA: its server certificate and every broker's client
                         certificate (agents' certificates come from the other CA, so
                         etcd, which requires a client certificate, refuses them)
    etcd/                etcd's data directory
    brokers/<name>.toml  each replica's settings
    agents/<site>.toml   each agent's settings
    logs/<proc>.log      every process's output
    token                the dev-mode admin token (0600)
    cli.toml             API URL, token and CA for the ``meridian`` CLI (0600)
    procs.json           what runs, for ``meridian dev down`` and ``status``
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import secrets
import shutil
import signal
import ssl
import sys
import time
from dataclasses import dataclass, field
from collections.abc import Collection
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker import errors
from broker.devfed import procs
from broker.devfed.minicloud import Minicloud, OpenStackSite
from broker.pki import authority
from broker.pki.layout import Layout
from broker.settings import EtcdSettings

ETCD_BINARY = "etcd"
ETCD_SERVER = "etcd"  # the name of etcd's server certificate in pki/etcd/brokers/
ETCD_CLIENT = "meridian-cli"  # a client certificate for tools and tests (dev only)
SWARM_SIZE = 25  # agents per process when agents share processes


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def toml(sections: dict[str, dict[str, object]], top: dict[str, object]) -> str:
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
    for name, values in sections.items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), even if it existed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


@dataclass
class Federation:
    state: Path
    brokers: int = 3
    heartbeat_interval: float = 1.0
    down_after: float = 3.0
    trust_domain: str = "meridian.local"
    python: str = sys.executable
    running: dict[str, procs.Proc] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    openstack: dict[str, OpenStackSite] = field(default_factory=dict)
    """Sites whose agents drive a real OpenStack (by site id); all others are sim."""
    clouds_yaml: Path | None = None
    """The clouds.yaml the openstack agents read (their credentials; never the broker's)."""
    image_audit_interval: float = 30.0
    """Seconds between a sim agent's audits of the images it holds."""
    agent_sections: dict[str, dict[str, dict[str, object]]] = field(default_factory=dict)
    """More settings sections for one site's agent (by site id), e.g. its ``datapath``."""
    serving: tuple[str, ...] = ()
    """Sites whose certificates may also serve (direct image transfers and swarming on
    127.0.0.1); with any, the brokers sign transfer grants (``grant_key``)."""
    image_settings: dict[str, dict[str, object]] = field(default_factory=dict)
    """More ``images`` settings for one site's agent (by site id), e.g. its link caps."""
    api_tls: bool = True
    """The brokers serve their API over HTTPS with their own certificates (verified
    against the federation CA: ``api_verify``); False is plain HTTP, for tests only."""

    # -- paths -------------------------------------------------------------------------

    @property
    def pki(self) -> Layout:
        return Layout(self.state / "pki")

    @property
    def etcd_pki(self) -> Layout:
        """etcd's own CA (``pki/etcd/``), apart from the one agents' certificates come from."""
        return Layout(self.state / "pki" / "etcd")

    def etcd_settings(self, *, client: str = ETCD_CLIENT, root: str = "") -> EtcdSettings:
        """How ``client`` (a broker name, or the tools' certificate) reaches the dev etcd."""
        tls = self.etcd_pki
        settings = EtcdSettings(
            endpoints=(self.etcd_endpoint,),
            ca_file=str(tls.ca_cert),
            cert_file=str(tls.broker_cert(client)),
            key_file=str(tls.broker_key(client)),
        )
        return dataclasses.replace(settings, root=root) if root else settings

    @property
    def token_file(self) -> Path:
        return self.state / "token"

    @property
    def ca_file(self) -> str:
        """The federation CA: what verifies the brokers' API (empty without TLS)."""
        return str(self.pki.ca_cert) if self.api_tls else ""

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def broker_names(self) -> list[str]:
        return [f"broker-{i}" for i in range(1, self.brokers + 1)]

    def api_url(self, broker: str | None = None) -> str:
        name = broker or self.broker_names()[0]
        scheme = "https" if self.api_tls else "http"
        return f"{scheme}://127.0.0.1:{self.ports[f'{name}.api']}"

    @property
    def api_verify(self) -> ssl.SSLContext | bool:
        """What an HTTP client passes as ``verify`` to trust the brokers' API."""
        return ssl.create_default_context(cafile=str(self.pki.ca_cert)) if self.api_tls else True

    def gateway_addrs(self) -> list[str]:
        return [f"127.0.0.1:{self.ports[f'{n}.grpc']}" for n in self.broker_names()]

    @property
    def etcd_endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['etcd.client']}"

    # -- set-up ------------------------------------------------------------------------

    def prepare(self) -> None:
        """PKI, ports and the admin token; reuses whatever already exists."""
        # the state holds the admin token and every key: the owner's alone
        self.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.state.chmod(0o700)
        if not self.pki.metadata.exists():
            authority.create(self.pki.root, self.trust_domain)
        ca = authority.load(self.pki.root)
        for name in self.broker_names():
            if not self.pki.broker_cert(name).exists():
                ca.issue_broker(name)
        if not self.etcd_pki.metadata.exists():
            authority.create(self.etcd_pki.root, self.trust_domain)
        etcd_ca = authority.load(self.etcd_pki.root)
        for name in (ETCD_SERVER, ETCD_CLIENT, *self.broker_names()):
            if not self.etcd_pki.broker_cert(name).exists():
                etcd_ca.issue_broker(name)  # serverAuth + clientAuth, localhost/127.0.0.1
        if not self.token_file.exists():
            fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
        for key in ("etcd.client", "etcd.peer"):
            self.ports.setdefault(key, procs.free_port())
        for name in self.broker_names():
            for kind in ("api", "grpc"):
                self.ports.setdefault(f"{name}.{kind}", procs.free_port())
        if self.serving:
            self._grant_keys()

    def add_openstack(self, cloud: Minicloud) -> list[str]:
        """Drive ``cloud``'s sites with openstack agents; returns their site ids."""
        self.clouds_yaml = cloud.clouds_yaml
        self.openstack.update({s.site_id: s for s in cloud.sites})
        return [s.site_id for s in cloud.sites]

    def issue_sites(self, sites: list[str]) -> None:
        ca = authority.load(self.pki.root)
        for site in sites:
            if not self.pki.site_cert(site).exists():
                ca.issue_site(site, serves=[] if site in self.serving else None)

    @property
    def grant_key(self) -> Path:
        """The brokers' transfer-grant key (``grant_pub``: its public half, for agents)."""
        return self.state / "pki" / "grant.key"

    @property
    def grant_pub(self) -> Path:
        return self.state / "pki" / "grant.pub"

    def _grant_keys(self) -> None:
        if self.grant_key.exists():
            return
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(self.grant_key, pem.decode())
        pub = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.grant_pub.write_bytes(pub)

    # -- processes ---------------------------------------------------------------------

    def start_etcd(self) -> procs.Proc:
        if shutil.which(ETCD_BINARY) is None:
            raise errors.BrokerError(
                "etcd not found: run deploy/dev/bootstrap.sh (installs Debian etcd-server)"
            )
        client, peer = self.ports["etcd.client"], self.ports["etcd.peer"]
        tls = self.etcd_pki
        cert, key, ca = tls.broker_cert(ETCD_SERVER), tls.broker_key(ETCD_SERVER), tls.ca_cert
        proc = procs.start(
            "etcd",
            [
                ETCD_BINARY,
                "--name",
                "dev",
                "--data-dir",
                str(self.state / "etcd"),
                "--listen-client-urls",
                f"https://127.0.0.1:{client}",
                "--advertise-client-urls",
                f"https://127.0.0.1:{client}",
                "--listen-peer-urls",
                f"https://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"https://127.0.0.1:{peer}",
                "--initial-cluster",
                f"dev=https://127.0.0.1:{peer}",
                # TLS both ways: a client (and a peer) without a certificate from etcd's
                # own CA is refused at the handshake
                f"--cert-file={cert}",
                f"--key-file={key}",
                f"--trusted-ca-file={ca}",
                "--client-cert-auth",
                f"--peer-cert-file={cert}",
                f"--peer-key-file={key}",
                f"--peer-trusted-ca-file={ca}",
                "--peer-client-cert-auth",
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ],
            self.state / "logs" / "etcd.log",
        )
        healthy = functools.partial(self.etcd_healthy, self.etcd_settings())
        procs.wait_until(proc, healthy, timeout=30, what="healthy")
        self.running["etcd"] = proc
        return proc

    @staticmethod
    def etcd_healthy(settings: EtcdSettings) -> bool:
        """etcd's /health over TLS, as the client ``settings`` describe (with its cert)."""
        context = ssl.create_default_context(cafile=settings.ca_file)
        if settings.cert_file:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        url = f"https://{settings.endpoints[0]}/health"
        try:
            return httpx.get(url, timeout=0.5, verify=context).status_code == 200
        except httpx.HTTPError:
            return False

    def broker_config(self, name: str) -> Path:
        path = self.state / "brokers" / f"{name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            toml(
                {
                    "etcd": {
                        "endpoints": [self.etcd_endpoint],
                        "ca_file": str(self.etcd_pki.ca_cert),
                        "cert_file": str(self.etcd_pki.broker_cert(name)),
                        "key_file": str(self.etcd_pki.broker_key(name)),
                    },
                    "tls": {
                        "ca_file": str(self.pki.ca_cert),
                        "cert_file": str(self.pki.broker_cert(name)),
                        "key_file": str(self.pki.broker_key(name)),
                        "trust_domain": self.trust_domain,
                    },
                    "gateway": {
                        "listen": f"127.0.0.1:{self.ports[f'{name}.grpc']}",
                        "heartbeat_interval": self.heartbeat_interval,
                    },
                    "api": {
                        "listen": f"127.0.0.1:{self.ports[f'{name}.api']}",
                        "tls": self.api_tls,
                        "auth": "dev",
                        "dev_token_file": str(self.token_file),
                    },
                    "health": {"down_after": self.down_after},
                    **(
                        {"images": {"grant_key_file": str(self.grant_key)}}
                        if self.serving
                        else {}
                    ),
                },
                {"name": name},
            )
        )
        return path

    def start_broker(self, name: str, *, wait: bool = True) -> procs.Proc:
        config = self.broker_config(name)
        proc = procs.start(
            name,
            [self.python, "-m", "broker.cli.main", "broker", "run", "--config", str(config)],
            self.state / "logs" / f"{name}.log",
        )
        self.running[name] = proc
        if wait:
            url = self.api_url(name)
            procs.wait_until(proc, lambda: self._api_healthy(url), timeout=60, what="serving")
        return proc

    def _api_healthy(self, url: str) -> bool:
        try:
            resp = httpx.get(f"{url}/healthz", timeout=1.0, verify=self.api_verify)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    def agent_config(self, site: str) -> Path:
        path = self.state / "agents" / f"{site}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            toml(
                {
                    "tls": {
                        "ca_file": str(self.pki.ca_cert),
                        "cert_file": str(self.pki.site_cert(site)),
                        "key_file": str(self.pki.site_key(site)),
                    },
                    "session": {"brokers": self.gateway_addrs()},
                    **self._driver_section(site),
                    **self.agent_sections.get(site, {}),
                },
                {"site_id": site, "driver": "openstack" if site in self.openstack else "sim"},
            )
        )
        return path

    def _driver_section(self, site: str) -> dict[str, dict[str, object]]:
        images: dict[str, object] = {
            "dir": str(self.images_dir(site)),
            "audit_interval": self.image_audit_interval,
        }
        if site in self.serving:  # serves its images to other sites on its own port
            port = self.ports.setdefault(f"{site}.direct", procs.free_port())
            images["direct_listen"] = f"127.0.0.1:{port}"
            images["grant_public_key_file"] = str(self.grant_pub)
        images.update(self.image_settings.get(site, {}))
        if site in self.openstack:
            return {"openstack": {"cloud": self.openstack[site].cloud}, "images": images}
        sim = {**self.sim_shape(site), "control_file": str(self.sim_control(site))}
        return {"sim": sim, "images": images}

    @staticmethod
    def sim_shape(site: str) -> dict[str, int]:
        """The generated inventory a sim site's agent gets (``hosts``, ``cells``, ``seed``
        of the sim's ``generated`` site): a benchmark can tell the biggest sites in advance."""
        return {"hosts": 4, "cells": 2, "seed": sum(site.encode())}

    def sim_control(self, site: str) -> Path:
        """A sim site's control file (``siteagent.drivers.simcontrol``): write it to fail
        the site's hosts or lose its servers out of band; absent means no faults."""
        return self.state / "sim" / f"{site}.yaml"

    def images_dir(self, site: str) -> Path:
        """A site's image directory: a sim site's image store (its stand-in for Glance),
        an openstack site's staging area for copies on their way into Glance."""
        return self.state / "images" / site

    def _agent_env(self, sites: list[str]) -> dict[str, str] | None:
        if not any(s in self.openstack for s in sites) or self.clouds_yaml is None:
            return None
        return {"OS_CLIENT_CONFIG_FILE": str(self.clouds_yaml)}

    def start_agents(
        self, sites: list[str], *, per_process: int = 1, alone: Collection[str] = ()
    ) -> list[procs.Proc]:
        """Agents for ``sites``, ``per_process`` sim agents to a process; the sites of
        ``alone`` get a process each (``agent-<site>``: one of them can be lost alone)."""
        started = []
        sim = [s for s in sites if s not in self.openstack and s not in alone]
        # an openstack agent runs alone: its driver holds connections and worker threads
        groups = [[s] for s in sites if s in self.openstack or s in alone]
        groups += [sim[i : i + per_process] for i in range(0, len(sim), per_process)]
        for group in groups:
            configs = [str(self.agent_config(s)) for s in group]
            name = f"agent-{group[0]}" if len(group) == 1 else f"swarm-{group[0]}"
            argv = [self.python, "-m", "siteagent", "run", *[f"--config={c}" for c in configs]]
            log = self.state / "logs" / f"{name}.log"
            proc = procs.start(name, argv, log, env=self._agent_env(group))
            self.running[name] = proc
            started.append(proc)
        return started

    def register_sites(self, sites: list[str], regions: int = 3) -> None:
        with httpx.Client(base_url=self.api_url(), timeout=10.0, verify=self.api_verify) as client:
            for i, site in enumerate(sites):
                body: dict[str, object] = {
                    "id": site,
                    "region": f"region-{i % regions + 1}",
                    "zone": f"zone-{i % 2 + 1}",
                    "labels": {"tier": "edge"},
                }
                if site in self.openstack:
                    region = self.openstack[site].region
                    body.update(region=region, zone="", labels={"driver": "openstack"})
                resp = client.post(
                    "/v1/sites", json=body, headers={"Authorization": f"Bearer {self.token}"}
                )
                if resp.status_code not in (201, 409):
                    raise errors.BrokerError(f"registering {site} failed: {resp.text}")

    # -- whole federation --------------------------------------------------------------

    def up(
        self, sites: list[str], *, per_process: int | None = None, alone: Collection[str] = ()
    ) -> None:
        self.prepare()
        self.issue_sites(sites)
        self.start_etcd()
        for name in self.broker_names():
            self.start_broker(name, wait=False)
        for name in self.broker_names():
            ready = functools.partial(self._api_healthy, self.api_url(name))
            procs.wait_until(self.running[name], ready, timeout=60, what="serving")
        self.register_sites(sites)
        if per_process is None:
            per_process = 1 if len(sites) <= 10 else SWARM_SIZE
        self.start_agents(sites, per_process=per_process, alone=alone)
        self.write_records()

    def write_records(self) -> None:
        record = {
            "ports": self.ports,
            "procs": {n: {"pid": p.pid, "log": str(p.log)} for n, p in self.running.items()},
            "api": self.api_url(),
        }
        (self.state / "procs.json").write_text(json.dumps(record, indent=2))
        write_private(
            self.state / "cli.toml",
            toml({}, {"api_url": self.api_url(), "token": self.token, "ca_file": self.ca_file}),
        )

    @classmethod
    def load(cls, state: Path) -> Federation:
        record = json.loads((state / "procs.json").read_text())
        fed = cls(state=state, api_tls=str(record.get("api", "https")).startswith("https"))
        fed.ports = {k: int(v) for k, v in record["ports"].items()}
        fed.brokers = sum(1 for k in fed.ports if k.endswith(".api"))
        for name, info in record["procs"].items():
            fed.running[name] = procs.Proc(
                name=name, argv=[], log=Path(info["log"]), pid=info["pid"]
            )
        return fed

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig``; after SIGKILL, wait until the process is gone (and reaped)."""
        proc = self.running[name]
        proc.signal(sig)
        if sig == signal.SIGKILL and proc.popen is not None:
            proc.popen.wait(timeout=10)

    def down(self) -> None:
        """Stop agents, then brokers, then etcd."""
        order = sorted(self.running, key=lambda n: (n == "etcd", n.startswith("broker")))
        for name in order:
            self.running[name].stop()
        self.running.clear()

    def api_get(self, path: str, *, broker: str | None = None, timeout: float = 3.0) -> Any:
        """GET ``path`` from ``broker``, or from the first live replica that answers 200."""
        names = [broker] if broker else self.broker_names()
        headers = {"Authorization": f"Bearer {self.token}"}
        last = "no replica is running"
        for name in names:
            proc = self.running.get(name)
            if proc is None or not proc.alive():
                continue
            try:
                resp = httpx.get(
                    self.api_url(name) + path,
                    headers=headers,
                    timeout=timeout,
                    verify=self.api_verify,
                )
            except httpx.HTTPError as exc:
                last = f"{name}: {exc}"
                continue
            if resp.status_code == 200:
                return resp.json()
            last = f"{name}: {resp.status_code} {resp.text}"
        raise errors.BrokerError(f"GET {path} failed: {last}")

    def wait_all_up(self, sites: list[str], timeout: float) -> dict[str, str]:
        """Poll the API until every site is UP; returns the last states seen."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        with httpx.Client(base_url=self.api_url(), timeout=5.0, verify=self.api_verify) as client:
            while time.monotonic() < deadline:
                resp = client.get("/v1/sites", headers={"Authorization": f"Bearer {self.token}"})
                if resp.status_code == 200:
                    states = {s["id"]: s.get("health", "") for s in resp.json()["sites"]}
                    if all(states.get(s) == "UP" for s in sites):
                        return states
                time.sleep(0.2)
        return states
