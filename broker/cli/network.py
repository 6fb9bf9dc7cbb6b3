"""``meridian network create|list|show|delete|verify``: stitched networks through the API.

``create`` waits for the leader's allocation and prints it (block, VNI, route target, MTU,
each site's segment); a refusal is one red line saying what to change or what is left.
``verify`` asks every member site's gateway to probe every peer and prints one row per
pair (reachability over ICMP and TCP, RTT, loss); it exits 1 when a pair fails.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from broker.cli import client, output

app = typer.Typer(no_args_is_help=True, help="Stitch networks across sites and verify them.")
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The network's name.")]


@app.command()
def create(
    name: NameArg,
    tenant: Annotated[str, typer.Option(help="The project that owns it.")],
    sites: Annotated[str, typer.Option(help="Member sites, comma-separated.")],
    network_type: Annotated[
        str, typer.Option("--type", help="l2-stretched or l3-routed.")
    ] = "l2-stretched",
    cidr: Annotated[str, typer.Option(help="A block (10.1.0.0/24), a size (/22), or none.")] = "",
    mtu: Annotated[
        int | None, typer.Option(help="Inner MTU (default: the most that fits).")
    ] = None,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Allocate and build a network over ``--sites``."""
    body: dict[str, Any] = {
        "name": name,
        "tenant": tenant,
        "type": network_type,
        "sites": [s.strip() for s in sites.split(",") if s.strip()],
        "cidr": cidr,
    }
    if mtu is not None:
        body["mtu"] = mtu
    with client.errors_exit():
        net = client.connect(api_url, token).post("/v1/networks", body)
    _show(net, output_format)


def _show(net: dict[str, Any], fmt: output.Format) -> None:
    if fmt is output.Format.json:
        output.print_json(net)
        return
    output.out.print(
        f"network [bold]{net['id']}[/bold] {net['state']} {net['type']} {net.get('cidr')} "
        f"vni {net.get('vni')} rt {net.get('route_target')} mtu {net.get('mtu')}"
        + (f" — {net['reason']}" if net.get("reason") else "")
    )
    rows = []
    status = net.get("site_status", {})
    for seg in net.get("segments", []):
        pool = seg.get("allocation_pool", ["", ""])
        rows.append({**seg, "pool": f"{pool[0]}-{pool[1]}", "status": status.get(seg["site"], "")})
    output.render(
        rows,
        output.Format.table,
        columns=["site", "subnet", "gateway", "address", "pool", "status"],
        empty="not allocated yet",
    )


@app.command("list")
def list_networks(
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Every stitched network you may see."""
    with client.errors_exit():
        rows = client.connect(api_url, token).get("/v1/networks")["networks"]
    for row in rows:
        row["sites"] = ",".join(row["sites"])
    output.render(
        rows,
        output_format,
        columns=["id", "tenant", "type", "state", "cidr", "vni", "mtu", "sites"],
        empty="no networks: meridian network create NAME --tenant T --sites a,b",
    )


@app.command()
def show(
    name: NameArg,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """One network: its allocation and every site's segment and status."""
    with client.errors_exit():
        net = client.connect(api_url, token).get(f"/v1/networks/{name}")
    _show(net, output_format)


@app.command()
def delete(name: NameArg, api_url: client.ApiUrl = None, token: client.Token = None) -> None:
    """Delete a network: its tunnels at every site, then its allocation."""
    with client.errors_exit():
        client.connect(api_url, token).delete(f"/v1/networks/{name}")
    output.out.print(f"deleting network [bold]{name}[/bold]")


@app.command()
def verify(
    name: NameArg,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Probe every pair of member sites across the network (ICMP and TCP)."""
    with client.errors_exit():
        report = client.connect(api_url, token).post(f"/v1/networks/{name}/verify", {})
    if output_format is output.Format.json:
        output.print_json(report)
    else:
        rows = [
            {
                **p,
                "icmp": "ok" if p["icmp"] else "FAIL",
                "tcp": "ok" if p["tcp"] else "FAIL",
                "loss": f"{100 * p['loss']:.0f}%",
            }
            for p in report["pairs"]
        ]
        output.render(
            rows,
            output.Format.table,
            columns=["source", "target", "address", "icmp", "tcp", "rtt_ms", "loss", "error"],
            empty="no pairs answered",
        )
        verdict = "[green]all pairs reachable[/green]" if report["ok"] else "[red]FAILED[/red]"
        missing = f"; no answer from {', '.join(report['missing'])}" if report["missing"] else ""
        output.out.print(f"{name}: {verdict} in {report['seconds']} s{missing}")
    if not report["ok"]:
        raise typer.Exit(1)
