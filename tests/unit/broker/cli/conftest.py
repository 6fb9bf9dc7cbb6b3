"""The CLI against the real API app, in-process: no server, no network.

The CLI takes the in-process client through ``client.http_override``; auth is the real
dev token file. MERIDIAN_* variables are cleared so no developer config leaks in.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from broker.api.app import create_app
from broker.api.auth import DevAuthenticator
from broker.cli import client
from broker.settings import BrokerSettings
from broker.store.memory import MemoryStore
from tests.unit.broker.cli.clitest_support import Broker, LoopThread, SyncASGITransport


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MERIDIAN_API_URL", "MERIDIAN_TOKEN", "MERIDIAN_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    store = MemoryStore()
    token_file = tmp_path / "token"
    app = create_app(
        store, BrokerSettings(), replica="broker-cli", auth=DevAuthenticator(token_file)
    )
    loop = LoopThread()
    http = httpx.Client(transport=SyncASGITransport(app, loop))
    monkeypatch.setattr(client, "http_override", http)
    monkeypatch.setenv("MERIDIAN_API_URL", "http://broker.test")
    token = token_file.read_text().strip()
    monkeypatch.setenv("MERIDIAN_TOKEN", token)
    try:
        yield Broker(store=store, loop=loop, token=token)
    finally:
        http.close()
        loop.run(store.close())
        loop.stop()
