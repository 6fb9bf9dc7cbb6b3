"""Domain values: frozen, keyed by kind/name, one-to-one with the wire messages."""

from __future__ import annotations

import dataclasses

import pytest

from siteagent import models

WIRE_FIELDS = {
    # the fields of each message in meridian/v1/agent.proto
    models.Inventory: {"hosts", "collected_unix_ms"},
    models.Host: {"name", "cells", "traits", "cpu_allocation_ratio"},
    models.NumaCell: {
        "id",
        "cpus_total",
        "pcpus_total",
        "pcpus_used",
        "vcpus_used",
        "memory_mb",
        "memory_used_mb",
        "hugepages",
        "sriov",
    },
    models.HugePages: {"page_size_kb", "total", "free"},
    models.SriovPool: {"physnet", "device", "vfs_total", "vfs_used"},
    models.Usage: {"projects"},
    models.DesiredObject: {"kind", "name", "generation", "spec", "deleted"},
    models.ObjectStatus: {
        "kind",
        "name",
        "observed_generation",
        "state",
        "message",
        "temporary",
        "outputs",
    },
}


@pytest.mark.parametrize("cls", list(WIRE_FIELDS), ids=lambda c: c.__name__)
def test_fields_match_the_wire(cls: type) -> None:
    assert {f.name for f in dataclasses.fields(cls)} == WIRE_FIELDS[cls]


def test_states_match_the_wire_enum() -> None:
    assert [s.name for s in models.ObjectState] == ["PENDING", "READY", "FAILED", "DELETED"]


def test_values_are_frozen_and_keyed() -> None:
    obj = models.DesiredObject("port", "fh-1", 3, {"network": "n"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        obj.generation = 4  # type: ignore[misc]
    status = models.ObjectStatus("port", "fh-1", 3, models.ObjectState.READY)
    assert obj.key == status.key == models.object_key("port", "fh-1") == "port/fh-1"
    assert status.outputs == {} and not status.temporary
