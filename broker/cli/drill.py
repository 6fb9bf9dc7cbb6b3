"""``meridian drill plan|run|abort|list|show|report`` and ``meridian report
survivability``: DR drills and the N+1 report through the broker API (tables, or
``--output json``; ``drill report --html FILE`` writes the self-contained page).

A plan (``POST /v1/drills`` mode whatif) writes nothing but the drill's own record. ``run``
asks for a live drill and follows it (a progress line per state) until it ends, unless
``--no-wait``; the leader runs it, so interrupting the CLI does not stop the drill —
``drill abort ID`` does.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from broker.cli import client, output
from broker.drills import report as drill_report

app = typer.Typer(no_args_is_help=True, help="DR drills: what-if plans, live drills, reports.")
report_app = typer.Typer(no_args_is_help=True, help="Federation reports.")

Names = Annotated[list[str] | None, typer.Option(help="Repeatable.")]
Labels = Annotated[
    list[str] | None, typer.Option("--label", help="KEY=VALUE of the VNFs' labels; repeatable.")
]


def _selector(labels: list[str] | None) -> dict[str, dict[str, str]]:
    """``--label k=v`` options as the API's ``selector``."""
    out: dict[str, str] = {}
    for pair in labels or ():
        key, eq, value = pair.partition("=")
        if not eq or not key:
            client.fail(f"--label {pair!r}: want KEY=VALUE")
        out[key] = value
    return {"labels": out}


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
        "images": "; ".join(_image(i) for i in o.get("images", ())),
        "rto_s": o["rto_s"],
    }


def _image(line: dict[str, Any]) -> str:
    """One line of the what-if's image table, short."""
    where = f"{line['image']}@{line['site']}"
    if line["status"] == "replication needed":
        return f"{where}: replicate ~{line['estimate_s']:g} s"
    return f"{where}: {line['status'].split(':')[0]}"


@app.command()
def plan(
    site: Names = None,
    zone: Names = None,
    region: Names = None,
    host: Annotated[list[str] | None, typer.Option(help="site/host; repeatable.")] = None,
    tenant: Names = None,
    label: Labels = None,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """What losing the scope would do: promotions, replacements, what cannot be restored."""
    scope = {"sites": site or [], "zones": zone or [], "regions": region or [], "hosts": host or []}
    if not any(scope.values()):
        client.fail("name a scope: --site, --zone, --region or --host")
    body = {
        "mode": "whatif",
        "scope": scope,
        "tenants": tenant or [],
        "selector": _selector(label),
    }
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


def _scope(site: list[str] | None, zone: list[str] | None, region: list[str] | None) -> Any:
    scope = {"sites": site or [], "zones": zone or [], "regions": region or []}
    if not any(scope.values()):
        client.fail("name a scope: --site, --zone or --region")
    return scope


ENDED = ("COMPLETED", "ABORTED", "FAILED")


@app.command()
def run(
    site: Names = None,
    zone: Names = None,
    region: Names = None,
    tenant: Names = None,
    vnf: Annotated[list[str] | None, typer.Option(help="Only these VNFs; repeatable.")] = None,
    label: Labels = None,
    max_duration_s: Annotated[float, typer.Option(help="Abort after this long.")] = 600.0,
    failback: Annotated[bool, typer.Option(help="Restore the original roles at the end.")] = True,
    hold_s: Annotated[float, typer.Option(help="Stay failed over at least this long.")] = 0.0,
    isolate_site: Annotated[
        bool,
        typer.Option(help="Quarantine the scope's sites whole (their agents refused)."),
    ] = False,
    wait: Annotated[bool, typer.Option(help="Follow the drill until it ends.")] = True,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """A live drill: the scope's members of the drill's VNFs are treated as lost, failover
    promotes their standbys, then (``--failback``) the original roles come back."""
    body = {
        "mode": "live",
        "scope": _scope(site, zone, region),
        "tenants": tenant or [],
        "vnfs": vnf or [],
        "selector": _selector(label),
        "max_duration_s": max_duration_s,
        "failback": failback,
        "hold_s": hold_s,
        "isolate": "site" if isolate_site else "none",
    }
    with client.errors_exit():
        api = client.connect(api_url, token)
        doc = api.post("/v1/drills", body)
        if wait:
            doc = _follow(api, doc, output_format is output.Format.table)
    if output_format is output.Format.json:
        output.print_json(doc)
        return
    output.out.print(f"drill [bold]{doc['id']}[/bold]: {doc['state']} {doc.get('reason', '')}")
    if "report" in doc:
        _report_tables(doc["report"])


def _follow(api: client.Api, doc: dict[str, Any], show: bool) -> dict[str, Any]:
    """Poll the drill until it ends; a line per state, a spinner meanwhile."""
    seen = ""
    with output.out.status(f"drill {doc['id']}: {doc['state']}") as status:
        while doc["state"] not in ENDED:
            if show and doc["state"] != seen:
                seen = doc["state"]
                output.out.print(f"{output.timestamp(int(time.time() * 1000))} {seen}")
            status.update(f"drill {doc['id']}: {doc['state']} {doc.get('reason', '')}")
            time.sleep(0.5)
            doc = api.get(f"/v1/drills/{doc['id']}")
    return doc


@app.command()
def abort(
    drill_id: str,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Abort a live drill (it fails back first when it was asked to); idempotent."""
    with client.errors_exit():
        answer = client.connect(api_url, token).post(f"/v1/drills/{drill_id}/abort", {})
    output.out.print(f"drill {drill_id}: abort asked (was {answer['state']})")


@app.command("list")
def list_(
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Every drill, newest first, with its measured RTO p99."""
    rows = client.fetch("/v1/drills", False, api_url, token)["drills"]
    if output_format is output.Format.json:
        output.print_json(rows)
        return
    shown = [
        {
            "id": r["id"],
            "mode": r["mode"],
            "state": r["state"],
            "sites": ", ".join(r["sites"]),
            "created": output.timestamp(r["created_ms"]),
            "vnfs": r["vnfs"],
            "rto p99 s": r["rto_p99_s"],
        }
        for r in rows
    ]
    output.render(shown, output.Format.table, empty="no drill yet")


@app.command()
def show(
    drill_id: str,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """One drill: its state and reason (``-o json``: the whole record)."""
    doc = client.fetch(
        f"/v1/drills/{drill_id}", output_format is output.Format.json, api_url, token
    )
    if doc is None:
        return
    keep = ("id", "mode", "state", "reason", "sites", "by", "max_duration_s", "failback")
    output.render({k: doc[k] for k in keep if k in doc}, output.Format.table)
    if doc["mode"] == "whatif":
        output.render([_cells(o) for o in doc["result"]["vnfs"]], output.Format.table)


@app.command("report")
def report_(
    drill_id: str,
    output_format: output.OutputOpt = output.Format.table,
    html: Annotated[Path | None, typer.Option(help="Write the HTML page to this file.")] = None,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """A live drill's measured report: per VNF RTO, restore, RPO, failback; totals."""
    with client.errors_exit():
        rep = client.connect(api_url, token).get(f"/v1/drills/{drill_id}/report")
    if html is not None:
        html.write_text(drill_report.html(rep))
        output.out.print(f"wrote {html}")
        return
    if output_format is output.Format.json:
        output.print_json(rep)
        return
    _report_tables(rep)


def _report_tables(rep: dict[str, Any]) -> None:
    output.out.print(f"drill {rep['drill']}: {rep['state']}: {rep['reason']}")
    cols = ["vnf", "cut", "rto_s", "estimate_rto_s", "redundancy_restored_s", "rpo_s"]
    rows = [
        {**{c: v[c] for c in cols}, "failback": v["failback"], "failed": v["failed"]}
        for v in rep["vnfs"]
    ]
    output.render(rows, output.Format.table, empty="no VNF in the drill")
    output.render(rep["totals"], output.Format.table, title="totals")
    output.render(
        [{k: e[k] for k in ("t_s", "kind", "subject", "message")} for e in rep["timeline"]],
        output.Format.table,
        title="timeline",
        empty="no event",
    )


@report_app.command()
def survivability(
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """N+1: whether the loss of each site, zone and region is absorbable."""
    answer = client.fetch(
        "/v1/reports/survivability", output_format is output.Format.json, api_url, token
    )
    if answer is None:
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
