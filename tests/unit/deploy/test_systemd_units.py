"""The systemd units run etcd with TLS both ways and client certificates required, from
certificates laid out as ``broker.pki`` issues them."""

from __future__ import annotations

import re
from pathlib import Path

from broker.pki.layout import Layout

UNITS = Path(__file__).resolve().parents[3] / "deploy" / "systemd"


def exec_args(unit: str) -> list[str]:
    text = (UNITS / unit).read_text()
    match = re.search(r"^ExecStart=((?:.*\\\n)*.*)$", text, re.MULTILINE)
    assert match, f"{unit} has no ExecStart"
    return match.group(1).replace("\\\n", " ").split()


def test_etcd_unit_requires_client_certificates_and_speaks_only_tls() -> None:
    args = exec_args("meridian-etcd.service")
    flags = {a.split("=", 1)[0]: a.split("=", 1)[1] if "=" in a else "" for a in args[1:]}
    assert "--client-cert-auth" in flags and "--peer-client-cert-auth" in flags
    urls = [u for a in args for u in re.findall(r"\w+://[^,\s]+", a)]
    assert urls and all(u.startswith("https://") for u in urls), urls
    pki = Layout(Path("/etc/meridian/etcd-pki"))
    member = "${ETCD_MEMBER}"
    assert flags["--trusted-ca-file"] == flags["--peer-trusted-ca-file"] == str(pki.ca_cert)
    assert flags["--cert-file"] == flags["--peer-cert-file"] == str(pki.broker_cert(member))
    assert flags["--key-file"] == flags["--peer-key-file"] == str(pki.broker_key(member))


def test_broker_unit_reads_its_settings_file() -> None:
    args = exec_args("meridian-broker.service")
    assert args[-2:] == ["--config", "/etc/meridian/broker.toml"]
