"""``meridian sites datapath set|show SITE``: a site's data-path profile through the API.

``set`` sends the profile file (YAML or JSON) as it is; the site's agent checks it against
its host and applies it. ``show`` prints the profile's generation and what the agent
observed (applied, refused with the field to fix, or drift found).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from broker.cli import client, output
from broker.cli.vnf import load_file

app = typer.Typer(no_args_is_help=True, help="A site's data-path profile (huge pages, VFs, OVS).")

SiteArg = Annotated[str, typer.Argument(metavar="SITE", help="The site id.")]
FileOpt = Annotated[
    Path, typer.Option("--file", "-f", exists=True, dir_okay=False, help="Profile (YAML/JSON).")
]


@app.command("set")
def set_profile(
    site_id: SiteArg, file: FileOpt, api_url: client.ApiUrl = None, token: client.Token = None
) -> None:
    """Declare the site's data-path profile; its agent applies it."""
    body = load_file(file)
    with client.errors_exit():
        answer = client.connect(api_url, token).put(f"/v1/sites/{site_id}/datapath", body)
    output.out.print(
        f"site [bold]{site_id}[/bold]: data-path profile at generation {answer['generation']}"
    )


def _flatten(shown: dict[str, Any]) -> dict[str, Any]:
    observed = shown.get("observed") or {}
    rows: dict[str, Any] = {
        "generation": shown.get("generation"),
        "observed generation": observed.get("observed_generation"),
        "state": observed.get("state", "not reported yet"),
        "message": observed.get("message"),
    }
    rows.update({f"  {k}": v for k, v in sorted((observed.get("outputs") or {}).items())})
    return rows


@app.command()
def show(
    site_id: SiteArg,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """The site's profile generation and what its agent observed."""
    with client.errors_exit():
        shown = client.connect(api_url, token).get(f"/v1/sites/{site_id}/datapath")
    if output_format is output.Format.json:
        output.print_json(shown)
    else:
        output.render(_flatten(shown), output_format, title=f"data path of site {site_id}")
