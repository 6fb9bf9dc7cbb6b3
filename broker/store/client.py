"""Pick the etcd client the settings name: ``open_store`` is how a replica gets its Store.

Both clients keep the ``Store`` contract (the contract suite runs on each) and translate
etcd's failures into the same ``broker.errors``; ``etcd.client`` chooses between them.
"""

from __future__ import annotations

from typing import TypeAlias

from broker.settings import EtcdSettings
from broker.store.etcd import EtcdStore
from broker.store.etcdaio import AsyncEtcdStore

EtcdClient: TypeAlias = EtcdStore | AsyncEtcdStore
CLIENTS: dict[str, type[EtcdStore] | type[AsyncEtcdStore]] = {
    "async": AsyncEtcdStore,
    "threaded": EtcdStore,
}


def open_store(settings: EtcdSettings) -> EtcdClient:
    """The Store over etcd with the client ``settings.client`` names."""
    return CLIENTS[settings.client].from_settings(settings)
