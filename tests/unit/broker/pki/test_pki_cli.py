"""``meridian pki`` end to end through Typer's runner, in a temporary directory."""

from __future__ import annotations

import datetime
import json
import stat
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from typer.testing import CliRunner, Result

from broker.cli import pki as cli
from broker.pki import authority, identity

ENV = ("MERIDIAN_PKI_DIR", "MERIDIAN_API_URL", "MERIDIAN_TOKEN")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: no folding in assertions
    monkeypatch.chdir(tmp_path)


def run(*args: str, env: dict[str, str] | None = None, obj: object = None) -> Result:
    return CliRunner().invoke(cli.app, list(args), env=env, obj=obj)


def failed(result: Result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "error:" in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_init_defaults_to_pki_in_the_working_directory(tmp_path: Path) -> None:
    result = run("init", "--trust-domain", "meridian.test")
    assert result.exit_code == 0, result.output
    ca = authority.load(tmp_path / "pki")
    assert ca.trust_domain == "meridian.test"
    assert stat.S_IMODE((tmp_path / "pki" / "ca.key").stat().st_mode) == 0o600
    assert "meridian.test" in result.stdout


def test_init_uses_the_settings_trust_domain_by_default(tmp_path: Path) -> None:
    assert run("init").exit_code == 0
    assert authority.load(tmp_path / "pki").trust_domain == "meridian.local"


def test_the_directory_comes_from_the_option_or_the_environment(tmp_path: Path) -> None:
    assert run("init", "--dir", "by-option", "--days", "20").exit_code == 0
    ca = authority.load(tmp_path / "by-option")
    left = ca.certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert left <= datetime.timedelta(days=20, minutes=1)
    env = {"MERIDIAN_PKI_DIR": str(tmp_path / "by-env")}
    assert run("init", env=env).exit_code == 0
    assert run("issue-site", "par-edge-01", env=env).exit_code == 0
    assert (tmp_path / "by-env" / "sites" / "par-edge-01.pem").is_file()
    assert not (tmp_path / "pki").exists()


def test_init_refuses_to_replace_a_ca_unless_forced(tmp_path: Path) -> None:
    assert run("init").exit_code == 0
    before = (tmp_path / "pki" / "ca.pem").read_bytes()
    failed(run("init"), "already holds a CA", "--force")
    assert (tmp_path / "pki" / "ca.pem").read_bytes() == before
    assert run("init", "--force").exit_code == 0
    assert (tmp_path / "pki" / "ca.pem").read_bytes() != before


def test_issue_site_writes_the_site_identity(tmp_path: Path) -> None:
    run("init", "--trust-domain", "meridian.test")
    result = run("issue-site", "par-edge-01", "--days", "30")
    assert result.exit_code == 0, result.output
    pem = (tmp_path / "pki" / "sites" / "par-edge-01.pem").read_bytes()
    key = tmp_path / "pki" / "sites" / "par-edge-01.key"
    assert identity.site_from_certificate(pem, "meridian.test") == "par-edge-01"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert identity.format_serial(identity.serial_of(pem)) in result.stdout
    failed(run("issue-site", "par-edge-01"), "--force")
    assert run("issue-site", "par-edge-01", "--force").exit_code == 0
    assert (tmp_path / "pki" / "sites" / "par-edge-01.pem").read_bytes() != pem


def test_a_site_that_serves_images_directly_gets_a_server_certificate(tmp_path: Path) -> None:
    run("init", "--trust-domain", "meridian.test")
    assert run("issue-site", "edge-02", "--serve", "edge-02.example.net").exit_code == 0
    assert run("issue-site", "edge-03").exit_code == 0
    served, plain = (
        x509.load_pem_x509_certificate((tmp_path / "pki" / "sites" / f"{s}.pem").read_bytes())
        for s in ("edge-02", "edge-03")
    )
    usage = x509.ExtendedKeyUsage
    server = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
    assert server in served.extensions.get_extension_for_class(usage).value
    assert server not in plain.extensions.get_extension_for_class(usage).value
    san = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "edge-02.example.net" in san.get_values_for_type(x509.DNSName)
    assert identity.site_from_certificate(served, "meridian.test") == "edge-02"


@pytest.mark.parametrize("site_id", ["Par-Edge", "a_b", "-x", "a" * 64])
def test_issue_site_refuses_bad_site_ids(tmp_path: Path, site_id: str) -> None:
    run("init")
    failed(run("issue-site", "--", site_id), "not a valid site id")
    assert not (tmp_path / "pki" / "sites").exists()


def test_issuing_without_a_ca_says_how_to_make_one() -> None:
    failed(run("issue-site", "par-edge-01"), "meridian pki init")
    failed(run("issue-broker", "broker-1"), "meridian pki init")


def test_issue_broker_takes_hosts(tmp_path: Path) -> None:
    run("init", "--trust-domain", "meridian.test")
    result = run("issue-broker", "broker-1", "--host", "b1.example.net", "--host", "10.0.0.5")
    assert result.exit_code == 0, result.output
    cert = x509.load_pem_x509_certificate(
        (tmp_path / "pki" / "brokers" / "broker-1.pem").read_bytes()
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "b1.example.net"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1",
        "10.0.0.5",
    ]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://meridian.test/broker/broker-1"
    ]
    failed(run("issue-broker", "broker-2", "--host", "not a host"), "--host")


def test_show_as_json(tmp_path: Path) -> None:
    run("init", "--trust-domain", "meridian.test")
    run("issue-site", "par-edge-01")
    path = tmp_path / "pki" / "sites" / "par-edge-01.pem"
    result = run("show", str(path), "--output", "json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["site"] == "par-edge-01"
    assert facts["trust_domain"] == "meridian.test"
    assert facts["serial"] == identity.format_serial(identity.serial_of(path.read_bytes()))
    assert facts["sans"] == ["URI:spiffe://meridian.test/site/par-edge-01"]
    assert facts["subject"] == "CN=par-edge-01,O=Meridian"
    assert facts["status"] == "valid" and facts["ca"] is False
    ca = json.loads(run("show", "pki/ca.pem", "-o", "json").stdout)
    assert ca["ca"] is True and ca["site"] is None


def test_show_as_a_table(tmp_path: Path) -> None:
    run("init", "--trust-domain", "meridian.test")
    run("issue-broker", "broker-1")
    result = run("show", "pki/brokers/broker-1.pem")
    assert result.exit_code == 0, result.output
    cert = x509.load_pem_x509_certificate((tmp_path / "pki/brokers/broker-1.pem").read_bytes())
    for needle in (
        "CN=broker-1,O=Meridian",
        f"{cert.serial_number:x}",
        "URI:spiffe://meridian.test/broker/broker-1",
        "DNS:localhost",
        cert.not_valid_after_utc.isoformat(),
    ):
        assert needle in result.stdout, needle


def test_show_reports_an_expired_certificate(tmp_path: Path) -> None:
    ca = authority.create(tmp_path / "pki", "meridian.test")
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=5)
    old = ca.issue_site("par-edge-01", days=1, valid_from=start)
    facts = json.loads(run("show", str(old.cert_path), "-o", "json").stdout)
    assert facts["status"] == "expired"


def test_show_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    failed(run("show", "missing.pem"), "cannot read missing.pem")
    (tmp_path / "junk.pem").write_bytes(b"junk")
    failed(run("show", "junk.pem"), "not a readable X.509 certificate")


# -- revoke -------------------------------------------------------------------------------


class Api:
    """A stand-in broker API: records each request and answers with ``status``."""

    def __init__(self, status: int = 201, body: object = None) -> None:
        self.status = status
        self.body = body if body is not None else {"serial": "1a2b"}
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, json=self.body)


def test_revoke_posts_the_serial_to_the_api() -> None:
    api = Api()
    env = {"MERIDIAN_API_URL": "http://api.test:8080", "MERIDIAN_TOKEN": "s3cret"}
    result = run("revoke", "0x1A:2B", "--reason", "key lost", env=env, obj=api.transport)
    assert result.exit_code == 0, result.output
    (request,) = api.requests
    assert request.method == "POST"
    assert str(request.url) == "http://api.test:8080/v1/pki/revocations"
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"serial": "1a2b", "reason": "key lost"}
    assert "1a2b" in result.stdout


def test_revoke_options_win_and_a_trailing_slash_is_harmless() -> None:
    api = Api()
    result = run(
        "revoke",
        "ff",
        "--api-url",
        "https://broker.example.net/",
        "--token",
        "tok",
        env={"MERIDIAN_API_URL": "http://wrong.test", "MERIDIAN_TOKEN": "wrong"},
        obj=api.transport,
    )
    assert result.exit_code == 0, result.output
    (request,) = api.requests
    assert str(request.url) == "https://broker.example.net/v1/pki/revocations"
    assert request.headers["authorization"] == "Bearer tok"
    assert json.loads(request.content) == {"serial": "ff", "reason": "unspecified"}


def test_revoke_reports_the_apis_refusal() -> None:
    api = Api(401, {"title": "Unauthorized", "detail": "token expired"})
    env = {"MERIDIAN_API_URL": "http://api.test", "MERIDIAN_TOKEN": "old"}
    failed(run("revoke", "1a2b", env=env, obj=api.transport), "401", "token expired", "--token")
    assert len(api.requests) == 1


def test_revoke_reports_an_unreachable_api() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    env = {"MERIDIAN_API_URL": "http://api.test", "MERIDIAN_TOKEN": "t"}
    result = run("revoke", "1a2b", env=env, obj=httpx.MockTransport(refuse))
    failed(result, "cannot reach the broker API", "MERIDIAN_API_URL")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["revoke", "1a2b", "--token", "t"], "MERIDIAN_API_URL"),
        (["revoke", "1a2b", "--api-url", "http://api.test"], "MERIDIAN_TOKEN"),
        (["revoke", "xyz", "--api-url", "http://api.test", "--token", "t"], "not a certificate"),
    ],
)
def test_revoke_refuses_before_calling_the_api(args: list[str], needle: str) -> None:
    api = Api()
    failed(run(*args, obj=api.transport), needle)
    assert api.requests == []
