"""``meridian sites list|show|register|delete``: sites through the broker API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from broker.cli import client, datapath, output

app = typer.Typer(no_args_is_help=True, help="Register and inspect sites.")
app.add_typer(datapath.app, name="datapath")

LIST_COLUMNS = ["id", "region", "zone", "health", "replica", "last_heartbeat_ms", "protocol"]
LIST_HEADERS = {"last_heartbeat_ms": "LAST HEARTBEAT"}


def parse_pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{"k": "v"}``; anything else is a usage error naming ``option``."""
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not key=value", param_hint=option)
        pairs[key] = value
    return pairs


PAGE = 1000  # sites per request while listing every one


def fetch_sites(api: client.Api, limit: int | None, **filters: Any) -> list[dict[str, Any]]:
    """The sites the filters match, page by page (the API's cursor), up to ``limit``."""
    found: list[dict[str, Any]] = []
    cursor = None
    while limit is None or len(found) < limit:
        want = PAGE if limit is None else min(PAGE, limit - len(found))
        page = api.get("/v1/sites", cursor=cursor, limit=want, **filters)
        found += page["sites"]
        if (cursor := page.get("next")) is None:
            break
    return found


@app.command("list")
def list_sites(
    health: Annotated[
        str | None, typer.Option(help="Only sites in this health: UP, DOWN or UNKNOWN.")
    ] = None,
    region: Annotated[str | None, typer.Option(help="Only sites of this region.")] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="key=value; repeat: all must match.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many (default: every one).")
    ] = None,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Registered sites with their health and the replica holding their stream."""
    parse_pairs(label, "--label")  # a malformed pair is a usage error before any request
    filters = {"health": health.upper() if health else None, "region": region, "label": label}
    with client.errors_exit():
        sites = fetch_sites(client.connect(api_url, token), limit, **filters)
    output.render(
        sites,
        output_format,
        columns=LIST_COLUMNS,
        headers=LIST_HEADERS,
        formats={"last_heartbeat_ms": output.ago},
        empty="no sites registered: meridian sites register ID --region R",
    )


def _flatten(site: dict[str, Any]) -> dict[str, Any]:
    """``GET /v1/sites/{id}`` as one readable field/value listing."""
    spec = site.get("spec") or {}
    status = site.get("status") or {}
    health = site.get("health") or {}
    rows: dict[str, Any] = {
        "id": site.get("id"),
        "region": spec.get("region"),
        "zone": spec.get("zone"),
        "failure domains": spec.get("failure_domains"),
        "geo": spec.get("geo"),
        "labels": spec.get("labels"),
        "registered": output.timestamp(spec.get("registered_ms")),
        "health": health.get("state"),
        "health since": output.timestamp(health.get("since_ms")),
        "health reason": health.get("reason"),
        "connected to": status.get("replica"),
        "protocol": status.get("protocol"),
        "agent version": status.get("agent_version"),
        "last heartbeat": output.ago(status.get("last_heartbeat_ms")),
    }
    for key, value in (site.get("inventory") or {}).items():
        rows[f"inventory {key.replace('_', ' ')}"] = value
    return rows


@app.command()
def show(
    site_id: Annotated[str, typer.Argument(metavar="ID", help="The site id.")],
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """One site: its spec, live session, health and inventory summary."""
    with client.errors_exit():
        site = client.connect(api_url, token).get(f"/v1/sites/{site_id}")
    if output_format is output.Format.json:
        output.print_json(site)
    else:
        output.render(_flatten(site), output_format, title=f"site {site_id}")


@app.command()
def register(
    site_id: Annotated[str, typer.Argument(metavar="ID", help="A lowercase DNS label.")],
    region: Annotated[str, typer.Option(help="The region the site belongs to.")],
    zone: Annotated[str, typer.Option(help="The zone within the region.")] = "",
    label: Annotated[
        list[str] | None, typer.Option("--label", help="key=value; repeat for more.")
    ] = None,
    failure_domain: Annotated[
        list[str] | None,
        typer.Option("--failure-domain", help="key=value, e.g. power=feed-a; repeatable."),
    ] = None,
    lat: Annotated[float | None, typer.Option(help="Latitude, -90..90.")] = None,
    lon: Annotated[float | None, typer.Option(help="Longitude, -180..180.")] = None,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Register a site so its agent may connect (admin)."""
    if (lat is None) != (lon is None):
        raise typer.BadParameter("give both --lat and --lon, or neither", param_hint="--lat/--lon")
    body: dict[str, Any] = {
        "id": site_id,
        "region": region,
        "zone": zone,
        "labels": parse_pairs(label, "--label"),
        "failure_domains": parse_pairs(failure_domain, "--failure-domain"),
    }
    if lat is not None and lon is not None:
        body["geo"] = {"lat": lat, "lon": lon}
    with client.errors_exit():
        spec = client.connect(api_url, token).post("/v1/sites", body)
    if output_format is output.Format.json:
        output.print_json(spec)
    else:
        output.out.print(f"[green]registered[/green] site [bold]{site_id}[/bold]")
        output.render(spec, output_format)


@app.command()
def delete(
    site_id: Annotated[str, typer.Argument(metavar="ID", help="The site id.")],
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Delete a site's registration (admin). Its agent can no longer connect."""
    with client.errors_exit():
        client.connect(api_url, token).delete(f"/v1/sites/{site_id}")
    output.out.print(f"deleted site [bold]{site_id}[/bold]")


SiteArg = Annotated[str, typer.Argument(metavar="SITE", help="The site id.")]


def _drain(site_id: str, verb: str, fmt: output.Format, url: str | None, tok: str | None) -> None:
    answer = client.act(f"/v1/sites/{site_id}/{verb}", fmt is output.Format.json, url, tok)
    if answer is None:
        return
    output.out.print(f"{verb} of site [bold]{site_id}[/bold] asked")
    row = {**answer, "vnfs": len(answer.get("vnfs", []))}
    output.render(
        [row],
        fmt,
        columns=["site", "draining", "was_draining", "vnfs"],
        headers={"was_draining": "WAS DRAINING", "vnfs": "VNFS AT SITE"},
    )


@app.command()
def drain(
    site_id: SiteArg,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Planned maintenance (admin): switch every VNF off the site, one at a time."""
    _drain(site_id, "drain", output_format, api_url, token)


@app.command()
def undrain(
    site_id: SiteArg,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """End a drain (admin); members already moved stay where they are."""
    _drain(site_id, "undrain", output_format, api_url, token)
