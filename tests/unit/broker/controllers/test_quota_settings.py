"""The ``[quota]`` settings section: loaded, validated, and what quota sync runs with."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from broker import errors, settings
from broker.controllers.quotasync import QuotaSyncController
from broker.models import codec
from broker.models.site import SiteSpec
from broker.quotas.ledgerstore import StoreLedger
from broker.settings import BrokerSettings, QuotaSettings
from broker.store import keys
from broker.store.memory import MemoryStore
from quota.ledger import Ledger
from quota.models import TenantId, TenantQuota

T = TenantId("tenant-s")


def test_quota_section_loads_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "broker.toml"
    path.write_text(
        "[quota]\ndrift_grace = 2.5\nreservation_ttl = 120\n[quota.headroom]\ncores = 2\n"
    )
    found = settings.load(path, env={"MERIDIAN_QUOTA__DRIFT_GRACE": "7"})
    assert found.quota == QuotaSettings(headroom={"cores": 2}, drift_grace=7.0, reservation_ttl=120)
    assert settings.load(None, env={}).quota == QuotaSettings()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[quota.headroom]\ncores = -1\n", "quota.headroom.cores"),
        ("[quota.headroom]\nwidgets = 1\n", "unknown resource class widgets"),
        ("[quota]\ndrift_grace = -0.5\n", "quota.drift_grace"),
        ("[quota]\nreservation_ttl = 1\n", "quota.reservation_ttl"),
        ("[quota]\nheadroomz = 1\n", "quota.headroomz"),
    ],
)
def test_bad_quota_settings_name_the_field(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "broker.toml"
    path.write_text(text)
    with pytest.raises(errors.SettingsError, match=problem.replace(".", r"\.")):
        settings.load(path, env={})


async def test_quota_sync_pushes_with_the_configured_headroom() -> None:
    mem = MemoryStore()
    try:
        await mem.put(keys.LEADER, b"broker-1")
        kv = await mem.get(keys.LEADER)
        assert kv is not None
        for site in ("edge-a", "edge-b"):
            await mem.put(keys.site(site), codec.encode(SiteSpec(id=site, region="eu")))
        ledger = Ledger(StoreLedger(mem))
        await ledger.set_quota(T, TenantQuota(limits={"cores": 10}))
        held = await ledger.reserve(T, {"cores": 3}, 30, site="edge-a", region="eu")
        await ledger.commit(T, held.id)
        await ledger.close()
        configured = BrokerSettings(
            name="broker-1", quota=QuotaSettings(headroom={"cores": 2}, drift_grace=0.5)
        )
        controller = QuotaSyncController(mem, configured, kv.create_revision)
        assert controller.config.headroom == {"cores": 2}
        assert controller.config.drift_grace == 0.5
        task = asyncio.create_task(controller.run())
        try:
            for _ in range(150):
                found = await mem.get(keys.desired("edge-b", "quota", T))
                if found is not None:
                    break
                await asyncio.sleep(0.02)
            assert found is not None, "no quota pushed to edge-b"
            # edge-b may use the global 10 less edge-a's 3, plus the configured 2
            assert json.loads(found.value)["spec"]["limits"]["cores"] == 9
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await mem.close()
