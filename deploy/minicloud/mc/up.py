"""``minicloud up``: brings a minicloud to "all K sites running", doing only what is missing.

Phases (each waits for health before the next; independent work runs in parallel):
install -> MariaDB + RabbitMQ -> configs + databases -> schema syncs -> keystone ->
identity -> other APIs, neutron-rpc-server, nova conductor/scheduler -> nova-computes ->
OVS agent reports -> computes up + cell host discovery -> test resources -> clouds.yaml.
With everything already running and unchanged, each phase is a no-op. A service that
fails to start is started once more (with a warning and its log tail on stderr, even with
``--quiet``); a second failure ends ``up`` at once with the tail of that service's log.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TextIO

from . import bootstrap, clouds, configs, infra, install, procs, resources, services
from .layout import Layout, Site

AGENT_REPORT_MAX_AGE = 12 * 3600  # agent_down_time is a day: re-report twice as often
RETRY_TAIL_LINES = 15


class Progress:
    """Prints one line per step, with the time since ``up`` began (thread-safe)."""

    def __init__(self, quiet: bool = False) -> None:
        self.t0 = time.monotonic()
        self.quiet = quiet
        self.lock = threading.Lock()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            self._write(sys.stdout, message)

    def warn(self, message: str) -> None:
        """Printed to stderr even with ``--quiet``: something went wrong and was retried."""
        self._write(sys.stderr, f"WARNING: {message}")

    def _write(self, stream: TextIO, message: str) -> None:
        line = f"[minicloud {time.monotonic() - self.t0:6.1f}s] {message}\n"
        with self.lock:
            stream.write(line)
            stream.flush()


def parallel(tasks: list[Callable[[], object]], workers: int = 4) -> None:
    """Runs tasks in threads; re-raises the first failure as soon as it happens."""
    if not tasks:
        return
    pool = ThreadPoolExecutor(max_workers=workers)
    futures = [pool.submit(t) for t in tasks]
    finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
    for f in finished:
        if f.exception() is not None:
            pool.shutdown(wait=False, cancel_futures=True)
            raise f.exception()
    pool.shutdown()


def wait_or_retry(svc: procs.Service, say: Progress) -> None:
    """Waits for a just-started service; when it exits or stays unhealthy, starts it once
    more (saying so, with the first attempt's log tail) before giving up.

    Services occasionally die at start for reasons a second start does not share (RabbitMQ
    once did on a loaded machine); a second failure raises ``StartError`` with the log tail.
    """
    try:
        procs.wait_healthy(svc)
    except procs.StartError as first:
        say.warn(
            f"{first}; starting {svc.name} once more. Last lines of {svc.log}:\n"
            + procs.tail(svc.log, RETRY_TAIL_LINES)
        )
        procs.stop(svc.pid_file, timeout=10)
        procs.start(svc)
        procs.wait_healthy(svc)
        say.warn(f"{svc.name} started on the second attempt")


def start_and_wait(svcs: list[procs.Service], say: Progress) -> list[procs.Service]:
    """Ensures each service runs (same fingerprint); waits for those (re)started."""
    started = [s for s in svcs if procs.ensure(s)]
    parallel([lambda s=s: wait_or_retry(s, say) for s in started], workers=len(started) or 1)
    if started:
        say("started " + ", ".join(s.name for s in started))
    return started


def infrastructure(lay: Layout, say: Progress) -> None:
    infra.write_mariadb_config(lay)
    infra.init_mariadb(lay)
    infra.write_rabbit_config(lay)
    mariadb, epmd, rabbit = (
        infra.mariadb_service(lay),
        infra.epmd_service(lay),
        infra.rabbit_service(lay),
    )
    started = [s for s in (mariadb, epmd) if procs.ensure(s)]
    if epmd in started:
        wait_or_retry(epmd, say)  # RabbitMQ must find our epmd, not start its own
    if procs.ensure(rabbit):
        started.append(rabbit)
    parallel([lambda s=s: wait_or_retry(s, say) for s in started if s is not epmd])
    if started:
        say("started " + ", ".join(s.name for s in started))


def stop_extra_sites(lay: Layout, say: Progress) -> None:
    """Stops the processes of sites numbered above ``--sites`` (their data stays)."""
    extra = [
        p
        for p in lay.run_dir.glob("site*-*.pid")
        if int(p.name[4:].split("-", 1)[0]) > lay.sites_count
    ]
    parallel([lambda p=p: procs.stop(p, timeout=5) for p in extra], workers=len(extra) or 1)
    if extra:
        say(f"stopped {len(extra)} process(es) of sites beyond --sites {lay.sites_count}")


def keystone_chain(
    lay: Layout, site: Site, files: dict[str, list[Path]], say: Progress
) -> Callable[[], None]:
    """Keystone's schema, start and identity data: one task, so it overlaps the other
    services' schema syncs."""

    def run() -> None:
        for step in bootstrap.db_steps(lay, site, only="db-keystone").values():
            step()
        start_and_wait([services.keystone(lay, site, files)], say)
        if not bootstrap.done(site, "identity"):
            bootstrap.identity(lay, site)
            bootstrap.mark(site, "identity")
            say(f"{site.name}: identity ready (service users, catalog, meridian users)")

    return run


def prepare(lay: Layout, say: Progress) -> None:
    """Debian packages, then MariaDB/RabbitMQ, while pip fills the services venv."""
    pool = ThreadPoolExecutor(max_workers=1)
    venv = pool.submit(install.services_venv, lay.venv, say)
    try:
        install.debian_packages(say)
        infrastructure(lay, say)
    finally:
        venv.result()  # a failed pip is reported before anything else
        pool.shutdown()


def up(lay: Layout, say: Progress) -> None:
    lay.run_dir.mkdir(parents=True, exist_ok=True)
    lay.save()
    prepare(lay, say)
    stop_extra_sites(lay, say)
    sites = lay.sites()
    files = {s.name: configs.all_for(lay, s) for s in sites}
    infra.create_databases(lay, [n for s in sites for n in bootstrap.database_names(s)])

    tasks = [keystone_chain(lay, s, files[s.name], say) for s in sites]
    syncs = [f for s in sites for n, f in bootstrap.db_steps(lay, s).items() if n != "db-keystone"]
    pending = len(syncs) + sum(bool(bootstrap.db_steps(lay, s, only="db-keystone")) for s in sites)
    if pending:
        say(f"creating schemas ({pending} sync jobs), starting keystone")
    parallel(tasks + syncs, workers=3)
    if pending:
        say("schemas done")

    control = [svc for s in sites for svc in services.control(lay, s, files[s.name])]
    started = start_and_wait(control, say)
    computes = [svc for s in sites for svc in services.computes(lay, s, files[s.name])]
    started += start_and_wait(computes, say)
    restarted = {svc.name for svc in started}
    parallel(
        [lambda s=s, f=f: f(lay, s, restarted, say) for s in sites for f in FINISH],
        workers=6,
    )
    clouds.write(lay)


def agents(lay: Layout, site: Site, restarted: set[str], say: Progress) -> None:
    """OVS agent reports: after neutron-rpc-server (re)started, or twice a day."""
    if f"{site.name}/neutron-rpc-server" in restarted or not bootstrap.done(
        site, "agents", AGENT_REPORT_MAX_AGE
    ):
        bootstrap.report_agents(lay, site)
        bootstrap.mark(site, "agents")
        say(f"{site.name}: OVS agents registered for the compute hosts")


def nova_ready(lay: Layout, site: Site, restarted: set[str], say: Progress) -> None:
    """Waits for nova's services after any of them (re)started; maps hosts the first time."""
    if any(n.startswith(f"{site.name}/nova") for n in restarted) or not bootstrap.done(
        site, "discovered"
    ):
        bootstrap.wait_computes(lay, site)
        if not bootstrap.done(site, "discovered"):
            bootstrap.discover_hosts(lay, site)
            bootstrap.mark(site, "discovered")
        say(f"{site.name}: nova services and both computes up")


def test_resources(lay: Layout, site: Site, restarted: set[str], say: Progress) -> None:
    """The image, flavor and network tests rely on, once."""
    if not bootstrap.done(site, "resources"):
        resources.ensure(lay, site)
        bootstrap.mark(site, "resources")
        say(f"{site.name}: test image, flavor and network created")


# per site, in parallel, after every process runs
FINISH = (agents, nova_ready, test_resources)
