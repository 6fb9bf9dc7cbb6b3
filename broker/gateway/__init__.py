"""Agent streams: the mTLS gRPC server every site agent dials out to.

The gateway binds each stream to the site named by the peer's client certificate
(invariant 5), negotiates the protocol version (invariant 10), records the site's live
session and inventory in etcd, pushes the site's desired objects down and writes the
observed status that comes up (invariant 4). It is the only broker package that touches
``grpc`` and the generated wire code.
"""
