"""A raw-socket HTTP/1.1 sender for the API's body attack tests (plain or TLS).

It streams a body (declared or chunked) the way an attacker would — as fast as the
server takes it, never reading — and stops when the server answers or hangs up. Over
TLS, a readable socket is not an answer: TLS 1.3 sends session tickets after the
handshake, so the sender probes with a non-blocking read and keeps sending while what
arrived was only a TLS record without application data.
"""

from __future__ import annotations

import json
import select
import socket
import ssl
from dataclasses import dataclass, field

CHUNK = 256 * 1024


@dataclass
class Answer:
    sent: int = 0
    status: int = 0
    head: bytes = b""
    body: dict[str, object] = field(default_factory=dict)
    early: bytes = b""
    reset: bool = False


def _probe(sock: socket.socket, answer: Answer) -> bool:
    """Whether the server has answered or hung up (what arrived is kept in ``early``)."""
    sock.setblocking(False)
    try:
        more = sock.recv(65536)
    except (ssl.SSLWantReadError, BlockingIOError):
        return False  # a TLS record with no application data (a session ticket)
    except OSError:
        answer.reset = True
        return True
    finally:
        sock.settimeout(10)
    answer.early += more
    return True


def read_answer(sock: socket.socket, answer: Answer, timeout: float = 10) -> None:
    data = answer.early
    sock.settimeout(timeout)
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 20:
        try:
            more = sock.recv(65536)
        except (ConnectionError, TimeoutError, ssl.SSLError):
            answer.reset = answer.reset or not data
            break
        if not more:
            break
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    answer.head = head
    answer.status = int(head.split()[1]) if head else 0
    if b"chunked" in head.lower():
        size, _, rest = rest.partition(b"\r\n")
        rest = rest[: int(size, 16)]
    try:
        answer.body = json.loads(rest)
    except ValueError:
        answer.body = {}


def post(
    port: int,
    verify: ssl.SSLContext | bool,
    *,
    token: str | None,
    chunked: bool,
    total: int,
    path: str = "/v1/sites",
    stall_after: int | None = None,
) -> Answer:
    """Send up to ``total`` bytes of malformed JSON until the server answers or hangs up;
    with ``stall_after``, stop sending after that many bytes and wait for the answer."""
    answer = Answer()
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}",
    ]
    if token is not None:
        head.append(f"Authorization: Bearer {token}")
    payload = b"[" * CHUNK
    if chunked:
        payload = f"{CHUNK:x}\r\n".encode() + payload + b"\r\n"
    limit = total if stall_after is None else stall_after
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        sock = (
            verify.wrap_socket(raw, server_hostname="127.0.0.1")
            if isinstance(verify, ssl.SSLContext)
            else raw
        )
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            _stream(sock, payload, limit, answer)
            read_answer(sock, answer, timeout=30 if stall_after is not None else 10)
        finally:
            sock.close()
    return answer


def _stream(sock: socket.socket, payload: bytes, limit: int, answer: Answer) -> None:
    while answer.sent < limit:
        readable, writable, _ = select.select([sock], [sock], [], 10)
        if readable and _probe(sock, answer):
            return  # the server has answered (or closed): stop sending
        if not writable:
            if readable:
                continue
            return  # it stopped reading and never answered: caught by the caller
        try:
            answer.sent += sock.send(payload)
        except OSError:
            answer.reset = True
            return
