"""``meridian dev up|down|status``: a whole local federation in one command."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from broker import errors
from broker.devfed import minicloud
from broker.devfed.federation import Federation

app = typer.Typer(no_args_is_help=True)
out = Console()
err = Console(stderr=True)

StateDir = Annotated[
    Path,
    typer.Option(
        "--state-dir", envvar="MERIDIAN_DEV_STATE", help="Where certificates, data and logs go."
    ),
]
DEFAULT_STATE = Path(".state/dev")


@app.command()
def up(
    sites: Annotated[
        int | None, typer.Option(help="How many sim sites (default 3, or 0 with --openstack).")
    ] = None,
    brokers: Annotated[int, typer.Option(help="Broker replicas.")] = 3,
    state_dir: StateDir = DEFAULT_STATE,
    detach: Annotated[
        bool, typer.Option(help="Return once up; stop with `meridian dev down`.")
    ] = False,
    openstack: Annotated[
        bool,
        typer.Option(
            help="Add one openstack-driver agent per deploy/minicloud site (started if needed)."
        ),
    ] = False,
    minicloud_state: Annotated[
        Path | None,
        typer.Option(
            envvar="MINICLOUD_STATE", help="minicloud's state dir (default: minicloud's own)."
        ),
    ] = None,
    minicloud_sites: Annotated[
        int | None,
        typer.Option(help="OpenStack sites minicloud runs (default: what it already has, or 2)."),
    ] = None,
) -> None:
    """Start etcd, broker replicas and agents (sim, or real OpenStack with --openstack)."""
    state = state_dir.resolve()
    if (state / "procs.json").exists() and _alive(Federation.load(state)):
        err.print(f"a federation already runs in {state}: `meridian dev down` first")
        raise typer.Exit(1)
    fed = Federation(state=state, brokers=brokers)
    sim_count = sites if sites is not None else (0 if openstack else 3)
    names = [f"site-{i:03d}" for i in range(1, sim_count + 1)]
    started = time.monotonic()
    try:
        if openstack:
            with out.status("starting or reusing minicloud (minutes on a first run)…"):
                cloud = minicloud.ensure(state_dir=minicloud_state, sites=minicloud_sites)
            names = fed.add_openstack(cloud) + names
            out.print(f"minicloud: {len(cloud.sites)} OpenStack site(s) in {cloud.state_dir}")
        with out.status(f"starting etcd, {brokers} brokers and {len(names)} agents…"):
            fed.up(names)
            # an openstack agent reads Nova and Placement before its hello: allow for it
            states = fed.wait_all_up(names, timeout=30 + sim_count * 0.2 + 90 * openstack)
    except errors.BrokerError as exc:
        err.print(f"[red]error:[/red] {exc}")
        fed.down()
        raise typer.Exit(1) from exc
    up_count = sum(1 for s in names if states.get(s) == "UP")
    out.print(
        f"[green]federation up[/green] in {time.monotonic() - started:.1f}s: "
        f"{brokers} brokers, {up_count}/{len(names)} sites UP"
    )
    _print_access(fed)
    if openstack:
        out.print(
            "minicloud keeps running after the federation stops "
            f"(`{minicloud.default_command()} down` stops it)"
        )
    if detach:
        out.print("stop it with: [bold]meridian dev down[/bold]")
        return
    out.print("Ctrl-C stops everything.")
    stops = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        signal.sigwait(stops)
    finally:
        with out.status("stopping…"):
            fed.down()
        out.print("stopped")


def _print_access(fed: Federation) -> None:
    table = Table(show_header=False, box=None)
    table.add_row("API", fed.api_url())
    if fed.ca_file:
        table.add_row("CA", fed.ca_file)
    table.add_row("token", fed.token)
    table.add_row("etcd", fed.etcd_endpoint)
    table.add_row("state", str(fed.state))
    table.add_row("CLI", f"export MERIDIAN_CONFIG={fed.state / 'cli.toml'}")
    out.print(table)


def _alive(fed: Federation) -> bool:
    return any(p.alive() for p in fed.running.values())


@app.command()
def down(state_dir: StateDir = DEFAULT_STATE) -> None:
    """Stop a federation started with --detach (keeps its state for the next `up`)."""
    state = state_dir.resolve()
    if not (state / "procs.json").exists():
        err.print(f"no federation recorded in {state}")
        raise typer.Exit(1)
    fed = Federation.load(state)
    fed.down()
    (state / "procs.json").unlink()
    out.print("stopped")


@app.command()
def status(state_dir: StateDir = DEFAULT_STATE) -> None:
    """Which processes of the local federation run."""
    state = state_dir.resolve()
    if not (state / "procs.json").exists():
        err.print(f"no federation recorded in {state}")
        raise typer.Exit(1)
    fed = Federation.load(state)
    table = Table("process", "pid", "state", "log")
    for name, proc in sorted(fed.running.items()):
        table.add_row(name, str(proc.pid), "running" if proc.alive() else "exited", str(proc.log))
    out.print(table)
