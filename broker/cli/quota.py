"""``meridian quota show|set|usage``: a tenant's global quota through the broker API.

``set`` merges the given limits into what the tenant has (``--replace`` starts from
nothing); limits are ``class=N`` with -1 for unlimited, scoped ones ``name:class=N``.
The API validates everything and its problem (naming the field) is what the user sees.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from broker.cli import client, output

app = typer.Typer(no_args_is_help=True, help="Show and set tenants' global quotas.")

USAGE_COLUMNS = ["resource", "limit", "used", "reserved", "left", "over_limit"]
SITE_COLUMNS = ["site", "resource", "used", "reserved", "reported"]

Tenant = Annotated[str, typer.Argument(metavar="TENANT", help="The Keystone project id.")]


def _limit(text: str, option: str) -> tuple[str, int]:
    cls, sep, raw = text.partition("=")
    if not sep or not cls:
        raise typer.BadParameter(f"{text!r} is not class=N", param_hint=option)
    try:
        return cls, int(raw)
    except ValueError:
        raise typer.BadParameter(
            f"{raw!r} in {text!r} is not an integer", param_hint=option
        ) from None


def _scoped(values: list[str] | None, option: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for item in values or []:
        where, sep, rest = item.partition(":")
        if not sep or not where:
            raise typer.BadParameter(f"{item!r} is not name:class=N", param_hint=option)
        cls, n = _limit(rest, option)
        out.setdefault(where, {})[cls] = n
    return out


def _unlimited(n: Any) -> Any:
    return "unlimited" if n == -1 else n


def _show(data: dict[str, Any], fmt: output.Format) -> None:
    if fmt is output.Format.json:
        output.print_json(data)
        return
    quota = data.get("quota") or {}
    effective = data.get("effective") or {}
    rows: dict[str, Any] = {
        "tenant": data.get("tenant"),
        "quota class": quota.get("quota_class"),
        "over limit": ", ".join(data.get("over_limit") or []) or "-",
    }
    for cls, n in (effective.get("limits") or {}).items():
        mark = "" if cls in (quota.get("limits") or {}) else " (default)"
        rows[cls] = f"{_unlimited(n)}{mark}"
    for scope in ("regions", "sites"):
        for name, limits in (effective.get(scope) or {}).items():
            rows[f"{scope[:-1]} {name}"] = limits
    output.render(rows, fmt, title=f"quota of {data.get('tenant')}")


@app.command()
def show(
    tenant: Tenant,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """A tenant's limits: as set, and in effect (defaults and quota class applied)."""
    with client.errors_exit():
        data = client.connect(api_url, token).get(f"/v1/quotas/{tenant}")
    _show(data, output_format)


@app.command("set")
def set_limits(
    tenant: Tenant,
    limit: Annotated[
        list[str] | None, typer.Option("--limit", help="class=N (-1: unlimited); repeatable.")
    ] = None,
    region_limit: Annotated[
        list[str] | None, typer.Option("--region-limit", help="region:class=N; repeatable.")
    ] = None,
    site_limit: Annotated[
        list[str] | None, typer.Option("--site-limit", help="site:class=N; repeatable.")
    ] = None,
    quota_class: Annotated[
        str | None, typer.Option("--class", help="The named quota class to start from.")
    ] = None,
    replace: Annotated[
        bool, typer.Option(help="Start from no limits instead of the tenant's current ones.")
    ] = False,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Set a tenant's limits (admin). A limit below current usage is accepted and shown
    as over limit; new reservations of that class are refused."""
    limits = dict(_limit(item, "--limit") for item in limit or [])
    regions = _scoped(region_limit, "--region-limit")
    sites = _scoped(site_limit, "--site-limit")
    with client.errors_exit():
        api = client.connect(api_url, token)
        body: dict[str, Any] = {"limits": {}, "regions": {}, "sites": {}}
        if not replace:
            body = dict(api.get(f"/v1/quotas/{tenant}")["quota"])
        body["limits"] = {**body.get("limits", {}), **limits}
        for key, scoped in (("regions", regions), ("sites", sites)):
            merged = {k: dict(v) for k, v in body.get(key, {}).items()}
            for name, values in scoped.items():
                merged[name] = {**merged.get(name, {}), **values}
            body[key] = merged
        if quota_class is not None:
            body["quota_class"] = quota_class
        data = api.request("PUT", f"/v1/quotas/{tenant}", json=body)
    if output_format is output.Format.table:
        output.out.print(f"[green]set[/green] the quota of [bold]{tenant}[/bold]")
    _show(data, output_format)


@app.command()
def usage(
    tenant: Tenant,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Limit, committed usage, live reservations and what is left; globally and per site."""
    path = f"/v1/quotas/{tenant}/usage"
    data = client.fetch(path, output.is_json(output_format), api_url, token)
    if data is None:
        return
    rows = [
        {
            **line,
            "limit": _unlimited(line["limit"]),
            "left": "-" if line.get("left") is None else line["left"],
            "over_limit": "OVER" if line.get("over_limit") else "",
        }
        for line in data.get("global", [])
    ]
    output.render(rows, output_format, columns=USAGE_COLUMNS, title=f"usage of {tenant}")
    site_rows = []
    for site, entry in (data.get("sites") or {}).items():
        classes = {*entry.get("used", {}), *entry.get("reserved", {}), *entry.get("reported", {})}
        for cls in sorted(classes):
            site_rows.append(
                {
                    "site": site or "(not placed)",
                    "resource": cls,
                    "used": entry.get("used", {}).get(cls, 0),
                    "reserved": entry.get("reserved", {}).get(cls, 0),
                    "reported": entry.get("reported", {}).get(cls, 0),
                }
            )
    output.render(
        site_rows,
        output_format,
        columns=SITE_COLUMNS,
        title="per site",
        empty="nothing used or reserved at any site",
    )
