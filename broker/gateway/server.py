"""Builds the gateway's grpc.aio server with mutual TLS from the replica's settings."""

from __future__ import annotations

from pathlib import Path

import grpc
from meridian.v1 import agent_pb2_grpc as pb_grpc
from meridian.v1 import image_pb2_grpc as ipb_grpc

from broker import errors
from broker.gateway.relay import Relay
from broker.gateway.servicer import Gateway
from broker.settings import BrokerSettings


def credentials(settings: BrokerSettings) -> grpc.ServerCredentials:
    """Server credentials that require a client certificate from the Meridian CA."""
    tls = settings.tls
    missing = [
        f"tls.{name}" for name in ("ca_file", "cert_file", "key_file") if not getattr(tls, name)
    ]
    if missing:
        raise errors.SettingsError(
            [f"{m}: required for the agent gateway (meridian pki ...)" for m in missing]
        )
    try:
        ca = Path(tls.ca_file).read_bytes()
        cert = Path(tls.cert_file).read_bytes()
        key = Path(tls.key_file).read_bytes()
    except OSError as exc:
        raise errors.SettingsError([f"tls: cannot read {exc.filename}: {exc.strerror}"]) from exc
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def build(
    settings: BrokerSettings, gateway: Gateway | None, relay: Relay | None = None
) -> grpc.aio.Server:
    """The mTLS server with the agent stream service and, given one, the image relay."""
    limit = settings.gateway.max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            # a connection that has not finished its TLS handshake (no certificate
            # checked yet) is dropped after this: nobody unauthenticated holds a socket
            # and a handshake slot for long (invariant 11)
            ("grpc.server_handshake_timeout_ms", int(settings.gateway.handshake_timeout * 1000)),
        ]
    )
    if gateway is not None:
        pb_grpc.add_AgentGatewayServicer_to_server(gateway, server)
    if relay is not None:
        ipb_grpc.add_ImageTransferServicer_to_server(relay, server)
    server.add_secure_port(settings.gateway.listen, credentials(settings))
    return server
