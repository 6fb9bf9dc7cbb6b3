"""The watch id a creation asks for reaches the wire: the client's messages lack the
field, so it rides as an unknown field and must survive serialization."""

from __future__ import annotations

from etcd3.etcdrpc import rpc_pb2

from broker.store import etcdwatch


def decode_varint(data: bytes) -> tuple[int, int]:
    value = shift = 0
    for i, byte in enumerate(data):
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i + 1
    raise ValueError("truncated varint")


def test_the_watch_id_is_serialized_as_field_7_of_the_create_request() -> None:
    request = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k/"))
    etcdwatch.ask_for_id(request, 300)  # two varint bytes
    inner = rpc_pb2.WatchRequest.FromString(request.SerializeToString()).create_request
    raw = inner.SerializeToString()
    at = raw.index(bytes([7 << 3]))
    assert decode_varint(raw[at + 1 :]) == (300, 2)
    assert inner.key == b"k/"


def test_ids_never_repeat() -> None:
    ids = [etcdwatch._next_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
