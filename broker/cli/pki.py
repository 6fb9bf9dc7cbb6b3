"""``meridian pki``: create the federation CA, issue broker and site certificates, revoke.

Keeps invariant 5 (identity is the certificate) at the operator's end: every site gets its
own certificate naming it (``issue-site``), and a lost or retired one is revoked through
the broker API (``revoke``), which the gateways watch. The commands work on a PKI directory
(``--dir``, else ``MERIDIAN_PKI_DIR``, else ``./pki``); ``revoke`` talks to the API at
``--api-url``/``MERIDIAN_API_URL`` with ``--token``/``MERIDIAN_TOKEN``.

Errors print one line saying what to do and exit with status 1, without a traceback.
"""

from __future__ import annotations

import datetime
import enum
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import httpx
import rich.markup
import typer
from cryptography import x509
from rich.console import Console
from rich.table import Table

from broker import errors, settings
from broker.pki import authority, identity

app = typer.Typer(
    name="pki",
    help="The federation's certificates: CA, broker and site certificates, revocation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

REVOCATIONS_PATH = "/v1/pki/revocations"
SAN_TYPES: dict[type[x509.GeneralName], str] = {
    x509.DNSName: "DNS",
    x509.IPAddress: "IP",
    x509.UniformResourceIdentifier: "URI",
    x509.RFC822Name: "email",
}
DEFAULT_DIR = Path("pki")

P = ParamSpec("P")
R = TypeVar("R")

DirOption = Annotated[
    Path,
    typer.Option(
        "--dir",
        envvar="MERIDIAN_PKI_DIR",
        help="PKI directory (env MERIDIAN_PKI_DIR).",
        show_default=True,
    ),
]


class Output(enum.StrEnum):
    table = "table"
    json = "json"


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[bold red]error:[/] {rich.markup.escape(message)}", soft_wrap=True)
    return typer.Exit(1)


def _reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a ``BrokerError`` into one line on stderr and exit status 1."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except errors.BrokerError as exc:
            raise _fail(str(exc)) from None

    return run


def _say(message: str) -> None:
    Console().print(message, soft_wrap=True)


def _issued(issued: authority.Issued) -> None:
    _say(f"issued {issued.kind} certificate for [bold]{issued.name}[/]")
    _say(f"  certificate  {issued.cert_path}")
    _say(f"  private key  {issued.key_path} (mode 0600)")
    _say(f"  serial       {identity.format_serial(issued.serial)}")
    _say(f"  valid until  {issued.not_valid_after.isoformat()}")


@app.command()
@_reports_errors
def init(
    directory: DirOption = DEFAULT_DIR,
    trust_domain: Annotated[
        str, typer.Option(help="SPIFFE trust domain of this federation.")
    ] = settings.TlsSettings().trust_domain,
    days: Annotated[int, typer.Option(help="Days the CA stays valid.")] = authority.CA_DAYS,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing CA (invalidates its certs).")
    ] = False,
) -> None:
    """Create the federation CA in the PKI directory."""
    ca = authority.create(directory, trust_domain, days=days, force=force)
    _say(f"created CA for trust domain [bold]{ca.trust_domain}[/] in {ca.paths.root}")
    _say(f"  certificate  {ca.paths.ca_cert}")
    _say(f"  private key  {ca.paths.ca_key} (mode 0600: keep it offline)")
    _say(f"  valid until  {ca.certificate.not_valid_after_utc.isoformat()}")


@app.command("issue-broker")
@_reports_errors
def issue_broker(
    name: Annotated[str, typer.Argument(help="Broker replica name (a lowercase DNS label).")],
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="DNS name or IP the broker is reached at (repeatable)."),
    ] = None,
    days: Annotated[int, typer.Option(help="Days the certificate stays valid.")] = (
        authority.LEAF_DAYS
    ),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing one.")] = False,
    directory: DirOption = DEFAULT_DIR,
) -> None:
    """Issue a broker replica's server certificate (also valid as a client)."""
    ca = authority.load(directory)
    _issued(ca.issue_broker(name, host or [], days, replace=force))


@app.command("issue-site")
@_reports_errors
def issue_site(
    site_id: Annotated[str, typer.Argument(help="Site id (a lowercase DNS label).")],
    days: Annotated[int, typer.Option(help="Days the certificate stays valid.")] = (
        authority.LEAF_DAYS
    ),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing one.")] = False,
    serve: Annotated[
        list[str] | None,
        typer.Option(
            "--serve",
            help="Host name or address other sites dial to copy images from this site "
            "directly (repeatable); makes it a server certificate too.",
        ),
    ] = None,
    directory: DirOption = DEFAULT_DIR,
) -> None:
    """Issue a site agent's client certificate, naming the site in its URI SAN."""
    ca = authority.load(directory)
    _issued(ca.issue_site(site_id, days, replace=force, serves=serve))


def describe(cert: x509.Certificate, now: datetime.datetime | None = None) -> dict[str, Any]:
    """What ``show`` prints about a certificate, as plain JSON-able values."""
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [f"{SAN_TYPES.get(type(n), type(n).__name__)}:{n.value}" for n in san]
    except x509.ExtensionNotFound:
        sans = []
    parsed = [identity.parse_spiffe(u) for u in identity.uris_of(cert)]
    sites = [p for p in parsed if p is not None and p.kind == identity.SITE_PATH]
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": identity.format_serial(cert.serial_number),
        "not_valid_before": start.isoformat(),
        "not_valid_after": end.isoformat(),
        "status": "expired" if now > end else "not yet valid" if now < start else "valid",
        "ca": ca,
        "sans": sans,
        "site": sites[0].name if len(sites) == 1 else None,
        "trust_domain": sites[0].trust_domain if len(sites) == 1 else None,
    }


@app.command()
@_reports_errors
def show(
    path: Annotated[Path, typer.Argument(help="Certificate file (PEM or DER).")],
    output: Annotated[Output, typer.Option("--output", "-o", help="Output format.")] = (
        Output.table
    ),
) -> None:
    """Print a certificate's subject, SANs, serial, validity and site id."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise errors.PkiError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        cert = identity.load_certificate(data)
    except errors.IdentityRefused as exc:
        raise errors.PkiError(f"{path}: {exc}") from exc
    facts = describe(cert)
    if output is Output.json:
        typer.echo(json.dumps(facts, indent=2))
        return
    table = Table(title=str(path), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in facts.items():
        text = "\n".join(value) if isinstance(value, list) else "-" if value is None else value
        table.add_row(key, rich.markup.escape(str(text)))
    Console().print(table)


def post_revocation(
    api_url: str,
    token: str,
    serial: int,
    reason: str,
    *,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> None:
    """``POST {api_url}/v1/pki/revocations``; raise ``PkiError`` saying why if refused."""
    url = api_url.rstrip("/") + REVOCATIONS_PATH
    body = {"serial": identity.format_serial(serial), "reason": reason}
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(timeout=timeout, transport=transport) as client:
            response = client.post(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise errors.PkiError(
            f"cannot reach the broker API at {url}: {exc}; check --api-url/MERIDIAN_API_URL"
        ) from exc
    if response.is_success:
        return
    detail = response.text.strip()
    try:
        problem = response.json()
        if isinstance(problem, dict):
            detail = str(problem.get("detail") or problem.get("title") or detail)
    except ValueError:
        pass
    hint = " (check --token/MERIDIAN_TOKEN)" if response.status_code in (401, 403) else ""
    raise errors.PkiError(
        f"the broker API refused the revocation: {response.status_code} "
        f"{response.reason_phrase}: {detail or 'no detail'}{hint}"
    )


@app.command()
@_reports_errors
def revoke(
    ctx: typer.Context,
    serial: Annotated[str, typer.Argument(help="Serial in hex, as `show` prints it.")],
    reason: Annotated[str, typer.Option(help="Why (kept with the revocation).")] = ("unspecified"),
    api_url: Annotated[
        str, typer.Option(envvar="MERIDIAN_API_URL", help="Broker API base URL.")
    ] = "",
    token: Annotated[
        str, typer.Option(envvar="MERIDIAN_TOKEN", help="Bearer token for the API.")
    ] = "",
    timeout: Annotated[float, typer.Option(help="Seconds before giving up.")] = 10.0,
) -> None:
    """Revoke a certificate: every broker refuses it and closes its streams."""
    number = identity.parse_serial(serial)
    if not api_url:
        raise errors.PkiError("no broker API: pass --api-url or set MERIDIAN_API_URL")
    if not token:
        raise errors.PkiError("no API token: pass --token or set MERIDIAN_TOKEN")
    # a caller (tests, an embedding CLI) may hand in a transport as the context object
    transport = ctx.find_object(httpx.BaseTransport)
    post_revocation(api_url, token, number, reason, timeout=timeout, transport=transport)
    _say(f"revoked certificate [bold]{identity.format_serial(number)}[/] ({reason})")
