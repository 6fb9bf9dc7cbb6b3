"""``meridian events``: the federation's events, oldest first; ``--follow`` keeps polling.

Following pages by event id (``since`` = the last id seen), so no event is shown twice
and none is skipped while the broker keeps them; Ctrl-C ends it with exit code 0.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.markup import escape

from broker.cli import client, output

COLUMNS = ["at_ms", "kind", "subject", "message", "replica"]
HEADERS = {"at_ms": "TIME"}


def _line(event: dict[str, Any], fmt: output.Format) -> None:
    if fmt is output.Format.json:
        typer.echo(json.dumps(event, sort_keys=True))
        return
    output.out.print(
        escape(
            f"{output.timestamp(event.get('at_ms'))}  {event.get('kind', '')}  "
            f"{event.get('subject', '')}  {event.get('message', '')}"
        )
    )


def events(
    since: Annotated[str | None, typer.Option(help="Only events after this event id.")] = None,
    subject: Annotated[
        str | None, typer.Option(help="Only events about this subject (a site id, a serial).")
    ] = None,
    site: Annotated[str | None, typer.Option(help="Only events about this site.")] = None,
    kind: Annotated[
        str | None, typer.Option(help="Only events of this kind, e.g. site.down.")
    ] = None,
    since_ms: Annotated[
        int | None, typer.Option("--since-ms", min=0, help="Only events at or after (unix ms).")
    ] = None,
    until_ms: Annotated[
        int | None, typer.Option("--until-ms", min=0, help="Only events at or before (unix ms).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events (Ctrl-C stops).")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between polls with --follow.", hidden=True)
    ] = 2.0,
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """What happened in the federation: registrations, sites going up/down, revocations."""
    api = client.connect(api_url, token)
    filters = {"subject": subject or site, "kind": kind, "since_ms": since_ms, "until_ms": until_ms}
    with client.errors_exit():
        found = api.get("/v1/events", since=since, limit=limit, **filters)["events"]
    if not follow:
        output.render(
            found,
            output_format,
            columns=COLUMNS,
            headers=HEADERS,
            formats={"at_ms": output.timestamp},
            empty="no events",
        )
        return
    last = since
    try:
        while True:
            for event in found:
                _line(event, output_format)
                last = str(event["id"])
            time.sleep(interval)
            with client.errors_exit():
                found = api.get("/v1/events", since=last, limit=1000, **filters)["events"]
    except KeyboardInterrupt:
        return
