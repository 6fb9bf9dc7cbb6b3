"""The refusals every API operation may answer with, as the OpenAPI document states them.

Each is an RFC 9457 problem (``problems``): the served document lists them on every
operation, so a client (and the schemathesis fuzzing in the test suite) can hold the API
to them — any other status, or any 4xx that is not problem+json, is a bug.
"""

from __future__ import annotations

from typing import Any

from broker.api import problems

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "urn:meridian:problem:<slug>"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what went wrong and what to do"},
        "field": {"type": "string", "description": "the input to fix (dotted path)"},
    },
    "additionalProperties": True,
}

REFUSALS: dict[int, str] = {
    400: "Malformed request (not HTTP the API can read)",
    401: "No valid token (checked before the body is read)",
    403: "The caller's roles or scope do not allow this",
    404: "No such resource or route",
    405: "Method not allowed on this path",
    408: "The body stopped arriving before its end (no byte for the guard's idle bound)",
    409: "Conflict: exists already, changed meanwhile, or refused by quota or placement",
    410: "The reservation expired",
    413: "The body, or a document in it, is larger than accepted",
    422: "Invalid input: ``field`` names what to fix",
    503: "etcd or Keystone unreachable, or no leader: retry after ``Retry-After``",
}


def responses() -> dict[int | str, dict[str, Any]]:
    """``FastAPI(responses=...)``: every refusal, documented on every operation."""
    return {
        status: {
            "description": text,
            "content": {problems.MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}},
        }
        for status, text in REFUSALS.items()
    }
