"""The survivability controller on the in-memory store: the report is recomputed after a
change (debounced), stored fenced, and the API answers from it (issue 11 item 2)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from broker import errors
from broker.controllers import survivability
from broker.drills import survivability as survivability_report
from broker.settings import BrokerSettings
from broker.store import keys
from broker.store.memory import MemoryStore
from tests.unit.broker.api.test_api_drills import world
from tests.unit.broker.controllers.test_failover_controller import lead


async def stored(store: MemoryStore) -> dict[str, Any] | None:
    kv = await store.get(keys.SURVIVABILITY)
    return None if kv is None else survivability_report.unpack(json.loads(kv.value))


async def test_recomputed_after_a_change_debounced_and_fenced(
    memory_store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(survivability, "DEBOUNCE_S", 0.05)
    await world(memory_store)
    ctl = survivability.SurvivabilityController(
        memory_store, await lead(memory_store), BrokerSettings()
    )
    task = asyncio.create_task(ctl.run())
    try:
        for _ in range(200):
            if (first := await stored(memory_store)) is not None:
                break
            await asyncio.sleep(0.02)
        assert first is not None, "computed after the first listing"
        rows = {f"{r['scope_kind']}:{r['scope']}": r["survivable"] for r in first["scopes"]}
        assert rows["site:s1"] and not rows["region:r1"]
        await memory_store.put(keys.site("s9"), (await memory_store.get(keys.site("s3"))).value)  # type: ignore[union-attr]
        for _ in range(200):
            again = await stored(memory_store)
            if again is not None and again["snapshot_revision"] > first["snapshot_revision"]:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("not recomputed after a change")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await lead(memory_store)  # another term
    with pytest.raises(errors.FencedOut):
        await ctl.compute()
