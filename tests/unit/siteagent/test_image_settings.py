"""The agent's image settings: loaded from TOML and environment, bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from siteagent import errors, settings

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
