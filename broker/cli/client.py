"""The CLI's way to the REST API: where it is, who we are, and what went wrong.

The API URL and token come from flags, else ``MERIDIAN_API_URL`` / ``MERIDIAN_TOKEN``,
else the TOML file named by ``MERIDIAN_CONFIG`` (default ``~/.config/meridian/config.toml``,
keys ``api_url``, ``token`` and ``ca_file`` — ``meridian dev up`` writes one; the API's
certificate is verified against ``ca_file``, the federation CA, or ``MERIDIAN_CA_FILE``).
Invariant: every failure reaches the user as one red line saying what to do, and exit
code 1 — never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.markup import escape

DEFAULT_API_URL = "https://127.0.0.1:8080"
TIMEOUT = 10.0
"""Seconds before one API call is abandoned."""

err = Console(stderr=True, highlight=False)

# Tests (and embedders) may hand every command this client instead of a network one.
http_override: httpx.Client | None = None

ApiUrl = Annotated[
    str | None,
    typer.Option("--api-url", help="Broker API URL [env MERIDIAN_API_URL, config api_url]."),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token", help="API token [env MERIDIAN_TOKEN, config token].", show_default=False
    ),
]


class ApiError(Exception):
    """What the CLI prints when a call fails: one line for the user."""


@dataclass(frozen=True, slots=True)
class ClientConfig:
    api_url: str
    token: str
    ca_file: str = ""
    """CA bundle that verifies the API's certificate (the federation CA); empty: the
    system's trust store."""

    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True


def config_path(env: Mapping[str, str]) -> Path:
    if path := env.get("MERIDIAN_CONFIG"):
        return Path(path).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "meridian" / "config.toml"


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ApiError(f"cannot read the CLI config {path}: {exc}") from exc


def resolve(
    api_url: str | None = None, token: str | None = None, env: Mapping[str, str] | None = None
) -> ClientConfig:
    """Flags, then environment, then the config file, then the local default."""
    env = os.environ if env is None else env
    file: dict[str, Any] = {}
    if not (api_url or env.get("MERIDIAN_API_URL")) or not (token or env.get("MERIDIAN_TOKEN")):
        file = _read_config(config_path(env))
    url = api_url or env.get("MERIDIAN_API_URL") or str(file.get("api_url") or DEFAULT_API_URL)
    tok = token or env.get("MERIDIAN_TOKEN") or str(file.get("token") or "")
    if not file and not env.get("MERIDIAN_CA_FILE"):
        file = _read_config(config_path(env))
    ca = env.get("MERIDIAN_CA_FILE") or str(file.get("ca_file") or "")
    return ClientConfig(api_url=url.rstrip("/"), token=tok, ca_file=ca)


def problem_message(resp: httpx.Response) -> str:
    """The one line to show for an error response (problem+json or not)."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("detail" in body or "title" in body):
        detail = str(body.get("detail") or body.get("title"))
        if resp.status_code == 401 and "token" not in detail:
            detail += " (set --token, MERIDIAN_TOKEN or token in the CLI config)"
        return f"{detail} (HTTP {resp.status_code})"
    text = resp.text.strip().splitlines()[0][:200] if resp.text.strip() else resp.reason_phrase
    return f"HTTP {resp.status_code}: {text}"


class Api:
    """A thin JSON client for the broker API; every failure is an ``ApiError``."""

    def __init__(self, config: ClientConfig, http: httpx.Client | None = None) -> None:
        self.config = config
        self._http = http or http_override
        self._own = self._http is None

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        headers = {"Accept": "application/json", **(headers or {})}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        url = f"{self.config.api_url}{path}"
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            if self._http is None:
                with httpx.Client(timeout=TIMEOUT, verify=self.config.verify()) as http:
                    resp = http.request(method, url, json=json, params=params, headers=headers)
            else:
                resp = self._http.request(method, url, json=json, params=params, headers=headers)
        except httpx.ConnectError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise ApiError(
                    f"the Meridian API at {self.config.api_url} has a certificate this CLI "
                    "does not trust: set ca_file in the CLI config or MERIDIAN_CA_FILE to the "
                    "federation CA (meridian dev up writes it)"
                ) from exc
            raise ApiError(
                f"cannot reach the Meridian API at {self.config.api_url}: is the broker "
                "running? (meridian dev up)"
            ) from exc
        except httpx.TimeoutException as exc:
            raise ApiError(
                f"the Meridian API at {self.config.api_url} did not answer within {TIMEOUT:g}s"
            ) from exc
        except httpx.HTTPError as exc:
            raise ApiError(f"talking to the Meridian API at {self.config.api_url}: {exc}") from exc
        if resp.status_code >= 400:
            raise ApiError(problem_message(resp))
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise ApiError(f"the API at {self.config.api_url} did not answer JSON") from exc

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any, *, headers: dict[str, str] | None = None) -> Any:
        return self.request("POST", path, json=body, headers=headers)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def connect(api_url: str | None = None, token: str | None = None) -> Api:
    try:
        return Api(resolve(api_url, token))
    except ApiError as exc:
        fail(str(exc))


def fail(message: str) -> NoReturn:
    """Print ``message`` as one red line and leave with exit code 1."""
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(1)


@contextlib.contextmanager
def errors_exit() -> Iterator[None]:
    """Turn an ``ApiError`` inside the block into a red line and exit code 1."""
    try:
        yield
    except ApiError as exc:
        fail(str(exc))


def act(path: str, as_json: bool, api_url: str | None, token: str | None) -> Any:
    """POST an operator action at ``path``; its answer, or None once printed as JSON."""
    with errors_exit():
        answer = connect(api_url, token).post(path, {})
    return _printed_or(answer, as_json)


def fetch(path: str, as_json: bool, api_url: str | None, token: str | None) -> Any:
    """GET ``path``; the document, or None once printed as JSON (the caller draws tables)."""
    with errors_exit():
        doc = connect(api_url, token).get(path)
    return _printed_or(doc, as_json)


def _printed_or(doc: Any, as_json: bool) -> Any:
    if as_json:
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return None
    return doc
