"""The error tree: what each error carries, and which ones are worth retrying."""

from __future__ import annotations

import pytest

from siteagent import errors


@pytest.mark.parametrize(
    ("exc", "delay"),
    [
        (errors.Temporary("x", retry_after=3.0), 3.0),
        (errors.StreamLost("gone"), 1.0),
        (errors.DriverError("port", "p", "409 conflict", temporary=True), 0.0),
        (errors.DriverError("port", "p", "503", temporary=True, retry_after=9.0), 9.0),
        (errors.DriverError("port", "p", "400 bad request", temporary=False), None),
        (errors.InvalidSpec("vcpus", "bad"), None),
        (errors.HardwareError("bad"), None),
        (errors.SettingsError(["a: b"]), None),
        (errors.Refused("REFUSAL_UNAVAILABLE", "etcd down", permanent=False, retry_after=2), None),
        (ValueError("foreign"), None),
    ],
)
def test_retry_delay(exc: BaseException, delay: float | None) -> None:
    assert errors.retry_delay(exc) == delay


def test_everything_is_a_site_agent_error() -> None:
    for cls in (
        errors.Temporary,
        errors.DriverError,
        errors.InvalidSpec,
        errors.SettingsError,
        errors.HardwareError,
        errors.WireError,
        errors.StreamLost,
        errors.Refused,
    ):
        assert issubclass(cls, errors.SiteAgentError)
    assert issubclass(errors.StreamLost, errors.Temporary)


def test_fields_and_messages() -> None:
    driver = errors.DriverError("server", "du-1", "No valid host", temporary=False)
    assert (driver.kind, driver.name, driver.cloud_message) == ("server", "du-1", "No valid host")
    assert str(driver) == "server 'du-1': No valid host"
    spec = errors.InvalidSpec(
        "extra_specs.hw:cpu_policy", "must be shared or dedicated", kind="flavor", name="f"
    )
    assert str(spec) == "flavor 'f': spec.extra_specs.hw:cpu_policy: must be shared or dedicated"
    assert str(errors.SettingsError(["a.b: x", "c: y"])) == "invalid settings:\n  a.b: x\n  c: y"
    assert str(errors.HardwareError("missing", path="/x")) == "/x: missing"
    refused = errors.Refused("REFUSAL_IDENTITY", "wrong site", permanent=True)
    assert (refused.code, refused.permanent, refused.retry_after) == (
        "REFUSAL_IDENTITY",
        True,
        None,
    )
