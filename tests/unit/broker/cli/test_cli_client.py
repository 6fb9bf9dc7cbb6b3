"""Where the CLI finds the API and its token, how failures read, and the output forms."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from broker.cli import client, output, sites

runner = CliRunner()


def test_defaults_when_nothing_is_set(tmp_path: Path) -> None:
    config = client.resolve(env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert config == client.ClientConfig(api_url="https://127.0.0.1:8080", token="")
    assert config.verify() is True  # the system's trust store


def test_config_file_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "cli.toml"
    path.write_text('api_url = "http://file:1/"\ntoken = "file-token"\n')
    env = {"MERIDIAN_CONFIG": str(path)}
    assert client.resolve(env=env) == client.ClientConfig("http://file:1", "file-token")
    env |= {"MERIDIAN_API_URL": "http://env:2", "MERIDIAN_TOKEN": "env-token"}
    assert client.resolve(env=env) == client.ClientConfig("http://env:2", "env-token")
    flags = client.resolve("http://flag:3", "flag-token", env=env)
    assert flags == client.ClientConfig("http://flag:3", "flag-token")


def test_ca_file_from_config_or_env_verifies_the_api(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    pem = tmp_path / "ca.crt"
    ca.cert_pem.write_to_path(str(pem))
    path = tmp_path / "cli.toml"
    path.write_text(f'api_url = "https://b:1"\ntoken = "t"\nca_file = "{pem}"\n')
    config = client.resolve(env={"MERIDIAN_CONFIG": str(path)})
    assert config.ca_file == str(pem) and not isinstance(config.verify(), bool)
    flagged = client.resolve("https://b:2", "t", env={"MERIDIAN_CONFIG": str(path)})
    assert flagged.ca_file == str(pem)  # flags name the API; the config still names its CA
    env = {"MERIDIAN_CONFIG": str(path), "MERIDIAN_CA_FILE": "/elsewhere/ca.crt"}
    assert client.resolve(env=env).ca_file == "/elsewhere/ca.crt"


def test_default_config_path_is_xdg(tmp_path: Path) -> None:
    path = tmp_path / "meridian" / "config.toml"
    path.parent.mkdir()
    path.write_text('token = "xdg-token"\n')
    config = client.resolve(env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert config.token == "xdg-token" and config.api_url == client.DEFAULT_API_URL


def test_broken_config_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("token = \n")
    monkeypatch.setenv("MERIDIAN_CONFIG", str(path))
    result = runner.invoke(sites.app, ["list"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot read the CLI config")


def refusing(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    http = httpx.Client(transport=httpx.MockTransport(handler))
    monkeypatch.setattr(client, "http_override", http)


def test_connection_refused_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    refusing(monkeypatch, httpx.ConnectError("[Errno 111] Connection refused"))
    result = runner.invoke(sites.app, ["list", "--api-url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: cannot reach the Meridian API at http://127.0.0.1:9: is the broker running? "
        "(meridian dev up)"
    )


def test_timeout_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    refusing(monkeypatch, httpx.ReadTimeout("slow"))
    result = runner.invoke(sites.app, ["show", "x", "--api-url", "http://api"])
    assert result.exit_code == 1 and "did not answer within" in result.stderr


def test_non_problem_errors_and_token_header(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(502, text="<html>Bad Gateway</html>\nmore")

    monkeypatch.setattr(
        client, "http_override", httpx.Client(transport=httpx.MockTransport(handler))
    )
    result = runner.invoke(sites.app, ["list", "--api-url", "http://api/", "--token", "tok"])
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: HTTP 502: <html>Bad Gateway</html>"
    assert seen[0].headers["authorization"] == "Bearer tok"
    assert str(seen[0].url) == "http://api/v1/sites?limit=1000"  # the first page


def test_cells() -> None:
    assert output.cell(None) == "-" and output.cell("") == "-" and output.cell({}) == "-"
    assert output.cell({"a": "1", "b": 2}) == "a=1, b=2"
    assert output.cell({"a": {"b": 1}}) == '{"a": {"b": 1}}'
    assert output.cell([1, "x"]) == "1, x" and output.cell(True) == "yes"
    assert output.ago(10_000, now_ms=15_500) == "5s ago"
    assert output.ago(0) == "-" and output.ago(None) == "-"
    assert output.ago(0 + 1, now_ms=3 * 3600 * 1000) == "2h ago"
    assert output.timestamp(0) == "-"


def test_render_json_is_the_data(capsys: pytest.CaptureFixture[str]) -> None:
    data: list[dict[str, object]] = [{"id": "a", "labels": {"x": "y"}, "n": None}]
    output.render(data, output.Format.json, columns=["id"])
    assert json.loads(capsys.readouterr().out) == data


def test_render_table_columns_headers_formats(capsys: pytest.CaptureFixture[str]) -> None:
    rows: list[dict[str, object]] = [{"id": "a", "n": 1, "hidden": "h"}, {"id": "[b]", "n": None}]
    output.render(
        rows,
        output.Format.table,
        columns=["id", "n"],
        headers={"n": "NUMBER"},
        formats={"n": lambda v: f"#{v}"},
    )
    out = capsys.readouterr().out
    assert "ID" in out and "NUMBER" in out and "HIDDEN" not in out
    assert "#1" in out and "[b]" in out  # rich markup is escaped, not interpreted
    output.render({"k": "v"}, output.Format.table)
    out = capsys.readouterr().out
    assert "k" in out and "v" in out
