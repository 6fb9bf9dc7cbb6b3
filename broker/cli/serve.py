"""``meridian broker run``: one broker replica in the foreground."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from broker import errors, settings

app = typer.Typer(no_args_is_help=True)
err = Console(stderr=True)


@app.command("run")
def run(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML settings file.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Replica name (overrides the file).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run a broker replica until SIGTERM or Ctrl-C."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from broker import running  # heavy imports only for this command

    try:
        loaded = settings.load(config)
        if name:
            loaded = dataclasses.replace(loaded, name=name)
        asyncio.run(running.run(loaded))
    except errors.SettingsError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except errors.BrokerError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
