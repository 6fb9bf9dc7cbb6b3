"""``etcd.client`` picks the Store's etcd client; a name that is no client is refused."""

from __future__ import annotations

import pytest

from broker import errors, settings
from broker.settings import EtcdSettings
from broker.store.client import CLIENTS, open_store
from broker.store.etcd import EtcdStore
from broker.store.etcdaio import AsyncEtcdStore


@pytest.mark.parametrize(("name", "kind"), [("async", AsyncEtcdStore), ("threaded", EtcdStore)])
async def test_the_setting_picks_the_client(name: str, kind: type) -> None:
    loaded = settings.load(env={"MERIDIAN_ETCD__CLIENT": name})
    assert loaded.etcd.client == name
    store = open_store(loaded.etcd)
    try:
        assert isinstance(store, kind)
    finally:
        await store.close()


def test_an_unknown_client_is_refused_by_name() -> None:
    with pytest.raises(errors.SettingsError, match=r"etcd\.client"):
        settings.load(env={"MERIDIAN_ETCD__CLIENT": "aetcd"})


def test_every_client_runs_the_contract_and_the_default_is_one() -> None:
    """The contract fixture (tests/conftest.py ``store``) has one param per client."""
    assert set(CLIENTS) == {"async", "threaded"}
    assert EtcdSettings().client in CLIENTS


async def test_both_clients_refuse_the_same_bad_settings() -> None:
    bad = EtcdSettings(cert_file="c.pem")
    for kind in CLIENTS.values():
        with pytest.raises(errors.SettingsError, match="set both or neither"):
            kind.from_settings(bad)
    unreadable = EtcdSettings(ca_file="/nonexistent/ca.pem")
    with pytest.raises(errors.SettingsError, match="cannot read"):
        AsyncEtcdStore.from_settings(unreadable)
