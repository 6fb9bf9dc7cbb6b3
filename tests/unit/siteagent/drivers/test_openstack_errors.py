"""The openstack driver's one error boundary and its markers, without a cloud."""

from __future__ import annotations

import asyncio
import json

import pytest
import requests
from keystoneauth1 import exceptions as ksa_exc
from openstack import exceptions as os_exc

from siteagent import errors
from siteagent.drivers.openstack_support import Marker, call, find_marker, translate


def http(status: int, message: str = "the cloud said no") -> os_exc.HttpException:
    """What openstacksdk raises for a real HTTP error answer."""
    response = requests.Response()
    response.status_code = status
    response.headers["Content-Type"] = "application/json"
    response._content = json.dumps({"error": {"message": message}}).encode()
    try:
        os_exc.raise_from_response(response)
    except os_exc.HttpException as exc:
        return exc
    raise AssertionError(f"no exception for HTTP {status}")


@pytest.mark.parametrize(
    ("exc", "temporary"),
    [
        (http(400), False),
        (http(403), False),
        (http(404), False),
        (http(409), True),
        (http(429), True),
        (http(500), True),
        (http(503), True),
        (ksa_exc.ConnectFailure("connection refused"), True),
        (ksa_exc.ConnectTimeout("slow"), True),
        (ksa_exc.EndpointNotFound("no compute"), True),
        (TimeoutError(), True),
        (os_exc.ResourceTimeout("still BUILD"), True),
        (ValueError("a bug"), False),
    ],
)
def test_foreign_errors_become_driver_errors(exc: Exception, temporary: bool) -> None:
    translated = translate("server", "vm", exc)
    assert isinstance(translated, errors.DriverError)
    assert translated.temporary is temporary
    assert (translated.kind, translated.name) == ("server", "vm")
    if temporary:
        assert errors.retry_delay(translated) is not None
    else:
        assert errors.retry_delay(translated) is None


def test_the_clouds_message_is_kept() -> None:
    translated = translate("port", "p", http(400, "Invalid input for binding:vnic_type"))
    assert isinstance(translated, errors.DriverError)
    assert translated.cloud_message == "HTTP 400: Invalid input for binding:vnic_type"


async def test_call_translates_and_times_out() -> None:
    def refused() -> None:
        raise ksa_exc.ConnectFailure("Unable to establish connection: refused")

    with pytest.raises(errors.DriverError) as failed:
        await call("server", "vm", 5.0, refused)
    assert failed.value.temporary and "unreachable" in failed.value.cloud_message

    def slow() -> None:
        import time

        time.sleep(0.5)

    with pytest.raises(errors.DriverError) as timed_out:
        await call("server", "vm", 0.05, slow)
    assert timed_out.value.temporary and "timed out" in timed_out.value.cloud_message
    await asyncio.sleep(0.5)  # let the worker thread finish before the loop closes


def test_markers_round_trip_and_foreign_text_is_not_one() -> None:
    marker = Marker("site-a", "server", "vnf/1", 7)
    assert str(marker) == "meridian:site-a/server/vnf/1:gen=7"
    assert Marker.parse(str(marker)) == marker
    assert find_marker(None, ["other", str(marker)]) == marker
    assert find_marker("not ours", [], {"a": 1}) is None
    assert marker.same_object(Marker("site-a", "server", "vnf/1", 1))
    assert not marker.same_object(Marker("site-b", "server", "vnf/1", 7))
