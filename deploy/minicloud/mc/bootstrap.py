"""One-time steps that fill a site's databases and catalogs, each guarded by a stamp.

A stamp file under ``siteN/stamps/`` marks a step done; the data it made lives in the
same state directory (MariaDB data dir, Glance stores), so stamps and data go together.
Steps are idempotent anyway: re-running one after a crash does no harm.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from . import configs, infra, layout, procs, rest
from .layout import Layout, Site
from .procs import StartError

DATABASES = ("keystone", "glance", "placement", "neutron", "nova_api", "nova_cell0", "nova_cell1")


def stamp(site: Site, step: str) -> Path:
    return site.dir / "stamps" / step


def done(site: Site, step: str, max_age: float | None = None) -> bool:
    path = stamp(site, step)
    if not path.exists():
        return False
    return max_age is None or time.time() - path.stat().st_mtime < max_age


def mark(site: Site, step: str) -> None:
    path = stamp(site, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(time.strftime("%F %T\n"))


def run(
    lay: Layout, log: Path, argv: list[str], ok_codes: tuple[int, ...] = (0,), timeout: float = 600
) -> None:
    """Runs one venv command, appending to ``log``; StartError with its tail on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n===== {time.strftime('%F %T')}: {' '.join(argv)}\n".encode())
        out.flush()
        t0 = time.monotonic()
        try:
            res = subprocess.run(
                [lay.bin(argv[0]), *argv[1:]],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                env=layout.venv_env(),
            )
        except subprocess.TimeoutExpired as exc:
            raise StartError(f"{argv[0]} {argv[1:3]} timed out after {timeout:.0f}s", log) from exc
        out.write(f"===== exit {res.returncode} after {time.monotonic() - t0:.1f}s\n".encode())
    if res.returncode not in ok_codes:
        raise StartError(f"{' '.join(argv[:4])} ... exited {res.returncode}", log)


def database_names(site: Site) -> list[str]:
    return [site.db(d) for d in DATABASES]


# per schema step: its databases, and the later steps whose results live in them
SCHEMA_STEPS = {
    "db-keystone": (("keystone",), ("identity", "resources")),
    "db-glance": (("glance",), ("resources",)),
    "db-placement": (("placement",), ("discovered",)),
    "db-neutron": (("neutron",), ("agents", "resources")),
    "db-nova": (("nova_api", "nova_cell0", "nova_cell1"), ("discovered", "resources")),
}


def db_steps(lay: Layout, site: Site, only: str | None = None) -> dict[str, Callable]:
    """The schema steps still to do for ``site``, by name; independent of each other.

    A step without its stamp may have been cut off half-way, and MySQL DDL does not roll
    back: its databases are dropped and made anew before it runs."""
    funcs = {
        "db-keystone": _keystone_db,
        "db-glance": _glance_db,
        "db-placement": _placement_db,
        "db-neutron": _neutron_db,
        "db-nova": _nova_db,
    }

    def step(name: str) -> None:
        dbs, dependents = SCHEMA_STEPS[name]
        for later in dependents:
            stamp(site, later).unlink(missing_ok=True)
        infra.recreate_databases(lay, [site.db(d) for d in dbs])
        funcs[name](lay, site)
        mark(site, name)

    return {
        name: (lambda name=name: step(name))
        for name in funcs
        if not done(site, name) and only in (None, name)
    }


def _log(lay: Layout, site: Site, what: str) -> Path:
    return lay.log_dir / f"{site.name}-{what}.log"


def _keystone_db(lay: Layout, site: Site) -> None:
    conf = f"--config-file={configs.etc(site, 'keystone') / 'keystone.conf'}"
    log = _log(lay, site, "keystone-manage")
    run(lay, log, ["keystone-manage", conf, "db_sync"])
    for repo in ("fernet-keys", "credential-keys"):
        _key_repository(configs.etc(site, "keystone") / repo)
    run(
        lay,
        log,
        [
            "keystone-manage",
            conf,
            "bootstrap",
            "--bootstrap-password",
            lay.secrets["admin"],
            "--bootstrap-region-id",
            site.region,
            "--bootstrap-admin-url",
            site.url("keystone"),
            "--bootstrap-internal-url",
            site.url("keystone"),
            "--bootstrap-public-url",
            site.url("keystone"),
        ],
    )


def _key_repository(path: Path) -> None:
    """What ``keystone-manage fernet_setup``/``credential_setup`` make, without starting
    keystone-manage twice: key 0 (staged) and key 1 (primary), 32 random bytes each."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for index in ("0", "1"):
        key = path / index
        if not key.exists():
            key.write_bytes(base64.urlsafe_b64encode(os.urandom(32)))
            key.chmod(0o600)


def _glance_db(lay: Layout, site: Site) -> None:
    conf = f"--config-file={configs.etc(site, 'glance') / 'glance-api.conf'}"
    run(lay, _log(lay, site, "glance-manage"), ["glance-manage", conf, "db", "sync"])


def _placement_db(lay: Layout, site: Site) -> None:
    conf = f"--config-file={configs.etc(site, 'placement') / 'placement.conf'}"
    run(lay, _log(lay, site, "placement-manage"), ["placement-manage", conf, "db", "sync"])


def _neutron_db(lay: Layout, site: Site) -> None:
    d = configs.etc(site, "neutron")
    # "heads" migrates neutron and the installed subprojects (vpnaas, bgpvpn)
    run(
        lay,
        _log(lay, site, "neutron-db-manage"),
        [
            "neutron-db-manage",
            f"--config-file={d / 'neutron.conf'}",
            f"--config-file={d / 'ml2_conf.ini'}",
            "upgrade",
            "heads",
        ],
    )


def _nova_db(lay: Layout, site: Site) -> None:
    """api_db sync, map_cell0, db sync, create_cell cell1: in one process (nova_cells.py)."""
    tool = layout.VENVTOOLS / "nova_cells.py"
    run(
        lay,
        _log(lay, site, "nova-manage"),
        [
            "python",
            str(tool),
            str(configs.etc(site, "nova") / "nova.conf"),
            lay.db_url(site.db("nova_cell0")),
        ],
    )


def admin_session(lay: Layout, site: Site) -> rest.Session:
    return rest.Session(site.url("keystone"), "admin", lay.secrets["admin"], "admin")


# (service name, type, API name) registered in each site's catalog
CATALOG = (
    ("glance", "image", "glance"),
    ("placement", "placement", "placement"),
    ("neutron", "network", "neutron"),
    ("nova", "compute", "nova"),
)
TEST_USERS = {
    "meridian-admin": ("meridian", ("admin", "member")),
    "meridian-member": ("meridian-tenant", ("member",)),
}


def identity(lay: Layout, site: Site) -> None:
    """Service users, catalog, and the test projects and users, in the site's Keystone."""
    s = admin_session(lay, site)
    ks = site.url("keystone")
    roles = {
        n: s.find_or_create(f"{ks}/roles", "role", {"name": n})["id"]
        for n in ("admin", "member", "reader", "service")
    }
    projects = {
        n: s.find_or_create(f"{ks}/projects", "project", {"name": n, "domain_id": "default"})["id"]
        for n in ("service", "meridian", "meridian-tenant")
    }

    def user(name: str, password: str) -> str:
        return s.find_or_create(
            f"{ks}/users", "user", {"name": name, "domain_id": "default"}, {"password": password}
        )["id"]

    def grant(uid: str, project: str, role: str) -> None:
        s.call("PUT", f"{ks}/projects/{projects[project]}/users/{uid}/roles/{roles[role]}")

    for svc, stype, api in CATALOG:
        uid = user(svc, lay.secrets["service"])
        grant(uid, "service", "admin")
        grant(uid, "service", "service")
        sid = s.find_or_create(
            f"{ks}/services", "service", {"name": svc, "type": stype}, query=f"?type={stype}"
        )["id"]
        for iface in ("public", "internal"):
            s.find_or_create(
                f"{ks}/endpoints",
                "endpoint",
                {
                    "service_id": sid,
                    "interface": iface,
                    "region_id": site.region,
                    "url": site.url(api),
                },
                query=f"?service_id={sid}&interface={iface}",
            )
    for name, (project, user_roles) in TEST_USERS.items():
        uid = user(name, lay.secrets["user"])
        for role in user_roles:
            grant(uid, project, role)
    # the test admin also administers the tenant project
    grant(user("meridian-admin", lay.secrets["user"]), "meridian-tenant", "admin")


def report_agents(lay: Layout, site: Site) -> None:
    """Registers an "Open vSwitch agent" per compute host through neutron's RPC, so
    ports bind; also proves neutron-rpc-server consumes its queue."""
    d = configs.etc(site, "neutron")
    hosts = [site.host(c) for c in configs.COMPUTES]
    tool = layout.VENVTOOLS / "ovs_agents.py"
    log = _log(lay, site, "ovs-agents")
    with open(log, "ab") as out:
        res = subprocess.run(
            [
                lay.bin("python"),
                str(tool),
                f"--config-file={d / 'neutron.conf'}",
                f"--config-file={d / 'ml2_conf.ini'}",
                *hosts,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=180,
            env={**layout.venv_env(), "PYTHONWARNINGS": "ignore"},
        )
    if res.returncode != 0:
        rpc_log = lay.log_dir / f"{site.name}-neutron-rpc-server.log"
        raise StartError(
            f"{site.name}: registering OVS agents failed; last lines of "
            f"{rpc_log}:\n{procs.tail(rpc_log, 15)}",
            log,
        )


def wait_computes(lay: Layout, site: Site, timeout: float = 180) -> None:
    """Waits until both nova-computes, the conductor and the scheduler report "up"."""
    s = admin_session(lay, site)
    want = {("nova-compute", site.host(c)) for c in configs.COMPUTES}
    want |= {("nova-conductor", site.host("ctl")), ("nova-scheduler", site.host("ctl"))}
    deadline = time.monotonic() + timeout
    while True:
        svcs = s.call("GET", f"{site.url('nova')}/os-services")["services"]
        up = {(v["binary"], v["host"]) for v in svcs if v["state"] == "up"}
        nodes = s.call("GET", f"{site.url('nova')}/os-hypervisors")["hypervisors"]
        names = {n["hypervisor_hostname"] for n in nodes}
        missing = want - up
        if not missing and all(site.host(c) in names for c in configs.COMPUTES):
            return
        if time.monotonic() > deadline:
            binary, host = sorted(missing or want)[0]
            role = host.split("-", 1)[1]
            name = binary if role == "ctl" else f"nova-{role}"
            raise StartError(
                f"{site.name}: {binary} on {host} not up after {timeout:.0f}s "
                f"(nodes: {sorted(names)})",
                lay.log_dir / f"{site.name}-{name}.log",
            )
        time.sleep(1)


def discover_hosts(lay: Layout, site: Site) -> None:
    conf = f"--config-file={configs.etc(site, 'nova') / 'nova.conf'}"
    run(
        lay,
        _log(lay, site, "nova-manage"),
        ["nova-manage", conf, "cell_v2", "discover_hosts", "--verbose"],
    )
