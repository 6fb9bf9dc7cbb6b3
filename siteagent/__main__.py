"""``meridian-agent`` / ``python -m siteagent``: run one site agent, or many in one process.

Several ``--config`` files run several agents in one process (each its own site, its own
certificate and its own stream): how the local federation and the fan-in benchmark host
hundreds of sim sites without hundreds of interpreters.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from siteagent import errors, settings

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
err = Console(stderr=True)


@app.command("run")
def run(
    config: Annotated[
        list[Path],
        typer.Option("--config", "-c", help="Agent TOML settings; repeat for more agents."),
    ],
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run site agents until SIGTERM or Ctrl-C."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from siteagent import running

    try:
        loaded = [settings.load(path) for path in config]
        asyncio.run(running.run_many(loaded))
    except errors.SettingsError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except errors.SiteAgentError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


@app.command("version")
def version() -> None:
    """Print the agent and protocol versions."""
    import meridian.v1 as wire

    from siteagent.session import AGENT_VERSION

    print(f"meridian-agent {AGENT_VERSION}, protocol {wire.MAJOR}.{wire.MINOR}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
