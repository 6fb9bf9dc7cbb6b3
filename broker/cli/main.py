"""The ``meridian`` command: operators' and provisioning systems' CLI, and process entry.

Sub-commands talk to the REST API (sites, events, leader, pki revoke), work on local
files (pki init/issue), or run processes (broker run, dev up/down).
"""

from __future__ import annotations

import typer

from broker.cli import dev, drill, pki, serve
from broker.cli import events as events_cmd
from broker.cli import image as image_cmd
from broker.cli import leader as leader_cmd
from broker.cli import network as network_cmd
from broker.cli import quota as quota_cmd
from broker.cli import sites
from broker.cli import vnf as vnf_cmd

app = typer.Typer(
    name="meridian",
    help="Meridian: one control plane over many OpenStack sites.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(sites.app, name="sites", help="Register and inspect sites.")
app.add_typer(sites.app, name="site", hidden=True)  # `meridian site datapath set ...` reads well
app.add_typer(pki.app, name="pki", help="Certificates: CA, brokers, sites, revocation.")
app.add_typer(serve.app, name="broker", help="Run a broker replica.")
app.add_typer(dev.app, name="dev", help="A local federation for development and tests.")
app.add_typer(quota_cmd.app, name="quota", help="Show and set tenants' global quotas.")
app.add_typer(vnf_cmd.app, name="vnf", help="Place and explain VNFs.")
app.add_typer(drill.app, name="drill", help="DR drills: what-if plans, live drills, reports.")
app.add_typer(drill.report_app, name="report", help="Federation reports (survivability).")
app.add_typer(image_cmd.app, name="image", help="Replicate images between sites.")
app.add_typer(network_cmd.app, name="network", help="Stitch networks across sites; verify them.")
app.command("events")(events_cmd.events)
app.command("leader")(leader_cmd.leader)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
