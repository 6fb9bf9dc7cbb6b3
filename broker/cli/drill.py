"""``meridian drill plan`` and ``meridian report survivability``: DR drills' what-if and
the N+1 report through the broker API (tables, or ``--output json``).

A plan (``POST /v1/drills`` mode whatif) writes nothing but the drill's own record; live
drills (``drill run``), drill reports and aborts are not built yet.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from broker.cli import client, output

app = typer.Typer(no_args_is_help=True, help="DR drills: what-if plans (live drills: not built).")
report_app = typer.Typer(no_args_is_help=True, help="Federation reports.")

Names = Annotated[list[str] | None, typer.Option(help="Repeatable.")]


def _cells(o: dict[str, Any]) -> dict[str, Any]:
    return {
        "vnf": o["vnf"],
        "tenant": o["tenant"],
        "service": o["service"],
        "state": o["state"],
        "promote": ", ".join(f"{p['member']}@{p['site']}" for p in o["promotions"]),
        "replace": ", ".join(
            f"{r['member']}→{r['site']}/{r['host']}#{r['numa_cell']}" for r in o["replacements"]
        ),
        "cannot restore": "; ".join(
            f"{c['member']}: {c['kind']}: {c['reason']}" for c in o["cannot_restore"]
        ),
        "rto_s": o["rto_s"],
    }


@app.command()
def plan(
    site: Names = None,
    zone: Names = None,
    region: Names = None,
    host: Annotated[list[str] | None, typer.Option(help="site/host; repeatable.")] = None,
    tenant: Names = None,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """What losing the scope would do: promotions, replacements, what cannot be restored."""
    scope = {"sites": site or [], "zones": zone or [], "regions": region or [], "hosts": host or []}
    if not any(scope.values()):
        client.fail("name a scope: --site, --zone, --region or --host")
    body = {"mode": "whatif", "scope": scope, "tenants": tenant or []}
    with client.errors_exit():
        answer = client.connect(api_url, token).post("/v1/drills", body)
    if output_format is output.Format.json:
        output.print_json(answer)
        return
    result = answer["result"]
    verdict = "[green]absorbable[/green]" if result["absorbable"] else "[red]NOT absorbable[/red]"
    lost = ", ".join(result["lost_sites"] + result["lost_hosts"]) or "nothing known"
    output.out.print(f"drill [bold]{answer['id']}[/bold]: loss of {lost}: {verdict}")
    output.render([_cells(o) for o in result["vnfs"]], output.Format.table, empty="no VNF affected")
    if result["shortfall"]:
        output.render(
            [{"class": k, "short": v} for k, v in result["shortfall"].items()],
            output.Format.table,
            title="headroom still needed",
        )


@report_app.command()
def survivability(
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """N+1: whether the loss of each site, zone and region is absorbable."""
    with client.errors_exit():
        answer = client.connect(api_url, token).get("/v1/reports/survivability")
    if output_format is output.Format.json:
        output.print_json(answer)
        return
    rows = [
        {
            "kind": r["scope_kind"],
            "scope": r["scope"],
            "survivable": "yes" if r["survivable"] else "NO",
            "affected": r["affected"],
            "lose service": ", ".join(r["lose_service"]),
            "stay degraded": ", ".join(r["stay_degraded"]),
            "shortfall": ", ".join(f"{k}={v}" for k, v in r["shortfall"].items()),
        }
        for r in answer["scopes"]
    ]
    output.render(rows, output.Format.table, empty="no site registered")
    bad = answer["not_survivable"]
    output.out.print(
        f"{len(bad)} of {len(rows)} scopes not survivable"
        if bad
        else "every site, zone and region is survivable"
    )
