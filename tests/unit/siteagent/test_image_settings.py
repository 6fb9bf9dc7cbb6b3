"""The agent's image settings: loaded from TOML and environment, bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from siteagent import errors, imagewire, settings

REQUIRED = {
    "site_id": "edge-1",
    "tls": {"ca_file": "ca.pem", "cert_file": "site.pem", "key_file": "site.key"},
}


def test_images_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[images]\ndir = "img"\nupload_rate = 1e6\n')
    loaded = settings.load(
        path, env={"MERIDIAN_AGENT_IMAGES__AUDIT_INTERVAL": "5"}, overrides=REQUIRED
    )
    assert (loaded.images.dir, loaded.images.upload_rate) == ("img", 1e6)
    assert loaded.images.audit_interval == 5.0
    assert settings.load(None, env={}, overrides=REQUIRED).images.dir == ""


@pytest.mark.parametrize(
    ("field", "value"),
    [("upload_rate", -1), ("download_rate", -1), ("audit_interval", 0), ("rate", 1)],
)
def test_bad_image_settings_name_the_field(field: str, value: float) -> None:
    with pytest.raises(errors.SettingsError) as caught:
        settings.load(None, env={}, overrides={**REQUIRED, "images": {field: value}})
    assert f"images.{field}" in str(caught.value)


def test_time_windows_load_and_cap_by_time_of_day() -> None:
    windows = {"upload_windows": ["08:00-20:00=1000"], "download_windows": ["22:00-06:00=5"]}
    loaded = settings.load(None, env={}, overrides={**REQUIRED, "images": windows})
    assert loaded.images.upload_windows == ("08:00-20:00=1000",)
    cap = imagewire.link_cap(0.0, loaded.images.download_windows)
    assert cap is not None and cap.rate == float("inf") and cap.windows[0].rate == 5.0
    assert imagewire.link_cap(0.0, ()) is None


@pytest.mark.parametrize("window", ["8:00-20:00=1000", "08:00-20:00", "08:00-08:00=5"])
def test_a_bad_time_window_names_the_field_and_the_form(window: str) -> None:
    with pytest.raises(errors.SettingsError) as caught:
        settings.load(None, env={}, overrides={**REQUIRED, "images": {"upload_windows": [window]}})
    assert "images.upload_windows" in str(caught.value)
    assert "HH:MM-HH:MM" in str(caught.value) or "length" in str(caught.value)
