"""Prometheus gauges about this replica's agent streams, on the API's registry."""

from __future__ import annotations

import functools

from prometheus_client import CollectorRegistry, Gauge

from broker.gateway.servicer import Gateway
from broker.gateway.sessions import Registry


def register(registry: CollectorRegistry, sessions: Registry, gateway: Gateway) -> None:
    streams = Gauge(
        "meridian_gateway_streams", "Agent streams held by this replica", registry=registry
    )
    streams.set_function(lambda: len(sessions))
    refusals = Gauge(
        "meridian_gateway_refusals",
        "Agent streams refused, by reason",
        ["code"],
        registry=registry,
    )
    for code in (
        "REFUSAL_IDENTITY",
        "REFUSAL_UNSUPPORTED_VERSION",
        "REFUSAL_UNKNOWN_SITE",
        "REFUSAL_MALFORMED",
        "REFUSAL_UNAVAILABLE",
        "BUSY",  # REFUSAL_UNAVAILABLE from admission control: too many streams opening
    ):
        refusals.labels(code).set_function(functools.partial(_count, gateway.refusals, code))
    opening = Gauge(
        "meridian_gateway_opening_streams",
        "Agent streams being opened right now (bounded by gateway.max_opening_streams)",
        registry=registry,
    )
    opening.set_function(lambda: gateway.admission.opening)


def _count(counts: dict[str, int], code: str) -> float:
    return counts.get(code, 0)
