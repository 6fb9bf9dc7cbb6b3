"""``meridian leader``: which broker replica runs the controllers, and its fence."""

from __future__ import annotations

from broker.cli import client, output


def leader(
    output_format: output.OutputOpt = output.Format.table,
    api_url: client.ApiUrl = None,
    token: client.Token = None,
) -> None:
    """Show the elected leader replica and its fencing token."""
    with client.errors_exit():
        found = client.connect(api_url, token).get("/v1/leader")
    output.render(found, output_format, title="leader")
