"""``meridian vnf create|show|list|delete|explain|latency-set``: VNFs through the broker API.

The descriptor file is sent as it is (YAML or JSON); the broker validates it and answers
with the field to fix. ``--dry-run`` prints the plan the broker would make, writing nothing.
A create is sent under an ``Idempotency-Key`` (``--idempotency-key``, or a fresh one): the
same key and file again is the same VNF, never a second one.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from broker.cli import client, output

app = typer.Typer(no_args_is_help=True, help="Place, inspect, explain and delete VNFs.")

FileOpt = Annotated[
    Path, typer.Option("--file", "-f", exists=True, dir_okay=False, help="Descriptor (YAML/JSON).")
]
IdArg = Annotated[str, typer.Argument(metavar="ID", help="The VNF id.")]


def load_file(path: Path) -> Any:
    """A YAML or JSON file as data; a usage error naming the file when it is not."""
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        client.fail(f"{path}: {exc}")


def _assignments(plan: dict[str, Any]) -> None:
    output.render(
        plan.get("assignments", []),
        output.Format.table,
        columns=["member", "role", "site", "region", "host", "numa_cell", "score"],
        empty="no assignment",
    )


@app.command()
def create(
    file: FileOpt,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only; write nothing.")] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            help="Send the create under this key: a retry with the same key and file is the "
            "same VNF, not a second one (default: a fresh key per run).",
        ),
    ] = None,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Ask the broker to place a VNF described by ``--file``."""
    body = load_file(file)
    path = "/v1/vnfs?dry_run=true" if dry_run else "/v1/vnfs"
    headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
    with client.errors_exit():
        answer = client.connect(api_url, token).post(path, body, headers=headers)
    if output_format is output.Format.json:
        output.print_json(answer)
    elif dry_run:
        plan = answer["plan"]
        verdict = "[green]feasible[/green]" if answer["feasible"] else "[red]infeasible[/red]"
        output.out.print(f"dry run: {verdict} {plan.get('reason', '')}")
        _assignments(plan)
    else:
        output.out.print(f"accepted VNF [bold]{answer['id']}[/bold] ({answer['state']})")


@app.command("list")
def list_vnfs(
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Every VNF you may see."""
    with client.errors_exit():
        rows = client.connect(api_url, token).get("/v1/vnfs")["vnfs"]
    output.render(
        rows,
        output_format,
        columns=["id", "tenant", "state", "members", "reason"],
        empty="no VNFs: meridian vnf create -f descriptor.yaml",
    )


@app.command()
def show(
    vnf_id: IdArg,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """One VNF: its state and each member's site, host and status."""
    vnf = client.fetch(f"/v1/vnfs/{vnf_id}", output.is_json(output_format), api_url, token)
    if vnf is None:
        return
    output.out.print(f"VNF [bold]{vnf['id']}[/bold] {vnf['state']} {vnf.get('reason') or ''}")
    output.render(
        list(vnf.get("members", [])),
        output.Format.table,
        columns=["name", "role", "site", "host", "numa_cell", "state", "message"],
        empty="not placed yet",
    )


@app.command()
def explain(
    vnf_id: IdArg,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Why the VNF went where it went: chosen, filtered sites, rejected hosts."""
    path = f"/v1/vnfs/{vnf_id}/explain"
    doc = client.fetch(path, output.is_json(output_format), api_url, token)
    if doc is None:
        return
    plan = doc.get("explain", {})
    output.out.print(
        f"VNF [bold]{vnf_id}[/bold] {doc.get('state')}: {plan.get('reason') or 'placed'}"
    )
    _assignments(plan)
    for vdu, info in plan.get("vdus", {}).items():
        output.out.print(
            f"VDU [bold]{vdu}[/bold]: {info['sites_feasible']} of {info['sites_total']} sites "
            f"feasible; dropped {info['dropped_by'] or 'none'}"
        )
        rows = [*info.get("filtered", []), *info.get("hosts_rejected", [])]
        output.render(rows, output.Format.table, columns=["site", "reason"], empty="")


@app.command()
def delete(vnf_id: IdArg, api_url: client.ApiUrl = None, token: client.Token = None) -> None:
    """Delete a VNF: every member at every site, then its claims and quota."""
    with client.errors_exit():
        client.connect(api_url, token).delete(f"/v1/vnfs/{vnf_id}")
    output.out.print(f"deleting VNF [bold]{vnf_id}[/bold]")


@app.command()
def failover(
    vnf_id: IdArg,
    to: Annotated[str, typer.Option("--to", help="Promote the standby at this site.")] = "",
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Switch a VNF's active role over to a standby (demoted first, then promoted)."""
    with client.errors_exit():
        client.connect(api_url, token).post(f"/v1/vnfs/{vnf_id}/failover", {"to_site": to})
    where = f" to {to}" if to else ""
    output.out.print(f"failing over VNF [bold]{vnf_id}[/bold]{where}")


@app.command()
def heal(
    vnf_id: IdArg,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Restore a VNF's redundancy now: re-place its lost members (also after refusals)."""
    json_out = output_format is output.Format.json
    answer = client.act(f"/v1/vnfs/{vnf_id}/heal", json_out, api_url, token)
    if answer is None:
        return
    output.out.print(f"healing VNF [bold]{vnf_id}[/bold]")
    rows = [{"member": m, "replacement": "asked"} for m in answer.get("members", [])]
    output.render(rows, output_format, columns=["member", "replacement"])


@app.command("latency-set")
def latency_set(file: FileOpt, api_url: client.ApiUrl = None, token: client.Token = None) -> None:
    """Register the site latency matrix (``entries: [{a, b, ms}]``; admin)."""
    body = load_file(file)
    with client.errors_exit():
        answer = client.connect(api_url, token).request("PUT", "/v1/latency", json=body)
    output.out.print(f"latency matrix: {answer['entries']} entries")
