"""How every CLI command shows what it got: a rich table for people, JSON for programs.

Invariant: ``--output json`` prints exactly the API's data (stable keys, no colour, no
truncation), so scripts can rely on it; only the table form is formatted for reading.
"""

from __future__ import annotations

import datetime
import enum
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

out = Console(highlight=False)

Formatter = Callable[[Any], str]


class Format(enum.StrEnum):
    table = "table"
    json = "json"


OutputOpt = Annotated[Format, typer.Option("--output", "-o", help="Output format.")]


def cell(value: Any) -> str:
    """One value as table text: '-' for nothing, k=v lists for maps, JSON for the rest."""
    if value is None or value == "" or value == {} or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        if all(not isinstance(v, Mapping | list) for v in value.values()):
            return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
        return json.dumps(value, sort_keys=True)
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    return str(value)


def ago(ms: Any, *, now_ms: int | None = None) -> str:
    """A unix-ms timestamp as '12s ago' (or '-')."""
    if not isinstance(ms, int) or ms <= 0:
        return "-"
    now = int(time.time() * 1000) if now_ms is None else now_ms
    seconds = max(0, (now - ms) // 1000)
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def timestamp(ms: Any) -> str:
    """A unix-ms timestamp as UTC ISO 8601 to the second (or '-')."""
    if not isinstance(ms, int) or ms <= 0:
        return "-"
    at = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def is_json(fmt: Format) -> bool:
    """Whether the caller asked for JSON (printed whole, no tables)."""
    return fmt is Format.json


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def table(
    rows: Sequence[Mapping[str, Any]],
    *,
    columns: Sequence[str] | None = None,
    headers: Mapping[str, str] | None = None,
    formats: Mapping[str, Formatter] | None = None,
    title: str | None = None,
) -> Table:
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    headers = headers or {}
    formats = formats or {}
    result = Table(title=title, show_lines=False)
    for column in columns:
        result.add_column(headers.get(column, column.replace("_", " ").upper()), overflow="fold")
    for row in rows:
        result.add_row(*(escape(formats.get(c, cell)(row.get(c))) for c in columns))
    return result


def details(data: Mapping[str, Any], *, title: str | None = None) -> Table:
    """A mapping as a two-column FIELD / VALUE table."""
    result = Table(title=title, show_header=False)
    result.add_column("field", style="bold")
    result.add_column("value", overflow="fold")
    for key, value in data.items():
        result.add_row(escape(str(key)), escape(cell(value)))
    return result


def render(
    data: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    fmt: Format,
    *,
    columns: Sequence[str] | None = None,
    headers: Mapping[str, str] | None = None,
    formats: Mapping[str, Formatter] | None = None,
    title: str | None = None,
    empty: str = "nothing to show",
) -> None:
    """Print ``data`` (rows, or one mapping) as ``fmt``.

    ``columns``, ``headers`` and ``formats`` shape the table only; JSON is always the
    data as given.
    """
    if fmt is Format.json:
        print_json(data)
        return
    if isinstance(data, Mapping):
        out.print(details(data, title=title))
        return
    if not data:
        out.print(escape(empty))
        return
    out.print(table(data, columns=columns, headers=headers, formats=formats, title=title))
