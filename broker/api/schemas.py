"""The API's request bodies: strict, closed schemas that say what is wrong and where.

Invariant: nothing reaches the store that these models did not accept — unknown fields,
coerced types ("45" for a number), out-of-range coordinates, ids that are not DNS labels
and serials that are not positive hex are refused with the field's dotted path.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
LABEL_KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?")
HEX_SERIAL = re.compile(r"(0x)?[0-9a-fA-F]{1,40}")
PLACE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
"""A region or zone name: what Keystone region ids, DNS and metric labels all accept."""
PROPERTY_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,254}")
MAX_ENTRIES = 64
MAX_PROPERTY_VALUE = 1024


def dns_label(value: str, what: str = "") -> str:
    if not DNS_LABEL.fullmatch(value):
        raise PydanticCustomError(
            "dns_label",
            "{what}must be a lowercase DNS label: 1-63 of a-z, 0-9 and '-', starting and "
            "ending with a letter or digit (got {value})",
            {"what": what, "value": repr(value)},
        )
    return value


def _string_map(value: dict[str, str], what: str) -> dict[str, str]:
    if len(value) > MAX_ENTRIES:
        raise PydanticCustomError(
            "too_many", "at most {n} {what}", {"n": MAX_ENTRIES, "what": what}
        )
    for key, item in value.items():
        if not LABEL_KEY.fullmatch(key):
            raise PydanticCustomError(
                "label_key",
                "key {key} must be 1-63 of A-Z, a-z, 0-9, '.', '_', '/', '-', starting "
                "and ending with a letter or digit",
                {"key": repr(key)},
            )
        if len(item) > 255:
            raise PydanticCustomError(
                "label_value", "the value of {key} is longer than 255", {"key": repr(key)}
            )
    return value


def properties(value: dict[str, str]) -> dict[str, str]:
    """Glance-style image properties (``hw:cpu_policy``, ``os_distro``), bounded."""
    if len(value) > MAX_ENTRIES:
        raise PydanticCustomError("too_many", "at most {n} properties", {"n": MAX_ENTRIES})
    for key, item in value.items():
        if not PROPERTY_KEY.fullmatch(key):
            raise PydanticCustomError(
                "property_key",
                "key {key} must be 1-255 of A-Z, a-z, 0-9, '_', '.', ':', '/', '-'",
                {"key": repr(key[:64])},
            )
        if len(item) > MAX_PROPERTY_VALUE or not item.isprintable():
            raise PydanticCustomError(
                "property_value",
                "the value of {key} must be printable and at most {n} characters",
                {"key": repr(key), "n": MAX_PROPERTY_VALUE},
            )
    return value


def place(value: str) -> str:
    if value and not PLACE.fullmatch(value):
        raise PydanticCustomError(
            "place",
            "must be 1-63 of A-Z, a-z, 0-9, '.', '_' and '-', starting and ending with a "
            "letter or digit (got {value})",
            {"value": repr(value[:80])},
        )
    return value


class Closed(BaseModel):
    """No unknown fields, no silent type coercion, no NaN."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class GeoIn(Closed):
    lat: float = Field(ge=-90.0, le=90.0, description="latitude in degrees, -90..90")
    lon: float = Field(ge=-180.0, le=180.0, description="longitude in degrees, -180..180")


class SiteIn(Closed):
    """``POST /v1/sites``."""

    id: str = Field(description="the site id: a lowercase DNS label, unique")
    region: str = Field(min_length=1, max_length=63)
    zone: str = Field(default="", max_length=63)
    failure_domains: dict[str, str] = Field(default_factory=dict)
    geo: GeoIn | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return dns_label(value)

    @field_validator("region", "zone")
    @classmethod
    def _place(cls, value: str) -> str:
        return place(value)

    @field_validator("failure_domains", "labels")
    @classmethod
    def _maps(cls, value: dict[str, str]) -> dict[str, str]:
        return _string_map(value, "entries")


class RevocationIn(Closed):
    """``POST /v1/pki/revocations``."""

    serial: str = Field(description="the certificate serial in hex, e.g. '1f3a' (colons ok)")
    reason: str = Field(default="", max_length=200)

    @field_validator("serial")
    @classmethod
    def _serial(cls, value: str) -> str:
        compact = value.replace(":", "")
        if not HEX_SERIAL.fullmatch(compact) or int(compact, 16) == 0:
            raise PydanticCustomError(
                "serial",
                "must be a positive certificate serial in hex of at most 20 bytes, like "
                "'4f1a9c' or '4F:1A:9C' (got {value})",
                {"value": repr(value)},
            )
        return f"{int(compact, 16):x}"


def allowed_fields() -> dict[str, dict[str, list[str]]]:
    """Request path -> dotted parent ("body" at the top) -> accepted fields.

    Lets an "unknown field" problem say which fields would have been right.
    """
    return {
        "/v1/sites": {"body": list(SiteIn.model_fields), "geo": list(GeoIn.model_fields)},
        "/v1/pki/revocations": {"body": list(RevocationIn.model_fields)},
    }
