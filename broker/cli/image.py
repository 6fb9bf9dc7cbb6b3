"""``meridian image list|show|replicate|repair``: the global image catalog through the API.

``replicate ID --to site-a,site-b`` (or ``--to region=eu``, a selector) asks for copies;
with ``--watch`` it follows every target site with a live progress bar (bytes, rate,
state) until each replica is active or failed, and exits 1 if any failed. The broker
does the copying; the CLI only reads ``GET /v1/images/{id}``. ``repair ID`` asks again
for every site whose replica failed (drift is re-copied by the broker on its own).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from rich.markup import escape

from broker.cli import client, output

app = typer.Typer(no_args_is_help=True, help="The global image catalog and its replicas.")

IdArg = Annotated[str, typer.Argument(metavar="ID", help="The image id.")]
DONE = ("active", "failed")


def _summary(states: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no replicas"


@app.command("list")
def list_images(
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Every image in the catalog, with how many sites hold it."""
    with client.errors_exit():
        rows = client.connect(api_url, token).get("/v1/images")["images"]
    output.render(
        rows,
        output_format,
        columns=["id", "name", "size", "source_site", "policy", "states"],
        formats={"states": _summary},
        empty="no images: register one with POST /v1/images",
    )


@app.command()
def show(
    image_id: IdArg,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """One image: its digests and every site's replica state."""
    with client.errors_exit():
        image = client.connect(api_url, token).get(f"/v1/images/{image_id}")
    if output_format is output.Format.json:
        output.print_json(image)
        return
    output.out.print(
        f"image [bold]{image['id']}[/bold] {image['name']}: {image['size']} bytes from "
        f"{image['source_site']}, sha256 {image['sha256']}"
    )
    output.render(
        list(image.get("replicas", [])),
        output.Format.table,
        columns=["site", "state", "offset", "source", "path", "attempts", "repairs", "reason"],
        empty="no replicas yet",
    )


def parse_to(to: str) -> dict[str, Any]:
    """``site-a,site-b`` → sites; ``region=eu,tier=edge`` → a selector."""
    if "=" in to:
        return {"selector": to}
    sites = [s.strip() for s in to.split(",") if s.strip()]
    if not sites:
        client.fail("--to: name sites (site-a,site-b) or a selector (region=eu)")
    return {"to": sites}


@app.command()
def replicate(
    image_id: IdArg,
    to: Annotated[
        str, typer.Option("--to", help="Sites (site-a,site-b) or a selector (region=eu).")
    ],
    watch: Annotated[bool, typer.Option("--watch", help="Follow the copies live.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --watch waits at most.")] = 3600.0,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Copy an image to more sites."""
    api = client.connect(api_url, token)
    with client.errors_exit():
        answer = api.post(f"/v1/images/{image_id}/replicate", parse_to(to))
    sites = list(answer.get("requested", []))
    if not watch:
        if output_format is output.Format.json:
            output.print_json(answer)
        else:
            output.out.print(f"replicating [bold]{image_id}[/bold] to {', '.join(sites)}")
        return
    final = _watch(api, image_id, sites, int(answer["size"]), timeout, output_format)
    failed = {s: r.get("reason", "") for s, r in final.items() if r.get("state") == "failed"}
    if output_format is output.Format.json:
        output.print_json(list(final.values()))
    for site, reason in sorted(failed.items()):
        client.err.print(f"[red]{site} failed:[/red] {escape(reason)}")
    if failed:
        raise typer.Exit(1)


@app.command()
def repair(
    image_id: IdArg,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Retry every failed replica of an image."""
    api = client.connect(api_url, token)
    with client.errors_exit():
        image = api.get(f"/v1/images/{image_id}")
        failed = sorted(r["site"] for r in image["replicas"] if r["state"] == "failed")
        if not failed:
            output.out.print(f"image [bold]{image_id}[/bold]: no failed replica")
            return
        api.post(f"/v1/images/{image_id}/replicate", {"to": failed})
    output.out.print(f"retrying [bold]{image_id}[/bold] at {', '.join(failed)}")


def _watch(
    api: client.Api,
    image_id: str,
    sites: list[str],
    size: int,
    timeout: float,
    fmt: output.Format,
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    last: dict[str, dict[str, Any]] = {}
    bars = Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[state]}"),
        console=output.out,
        disable=fmt is output.Format.json,
    )
    with bars:
        tasks: dict[str, TaskID] = {
            s: bars.add_task(s, total=max(size, 1), state="queued") for s in sites
        }
        while time.monotonic() < deadline:
            with client.errors_exit():
                image = api.get(f"/v1/images/{image_id}")
            last = {r["site"]: r for r in image["replicas"] if r["site"] in tasks}
            for site, task in tasks.items():
                r = last.get(site, {"state": "queued", "offset": 0})
                done = max(size, 1) if r["state"] == "active" else int(r.get("offset", 0))
                bars.update(task, completed=done, state=r["state"])
            if len(last) == len(sites) and all(r["state"] in DONE for r in last.values()):
                return last
            time.sleep(0.5)
    client.fail(f"replicas of {image_id} not settled within {timeout:g}s")
