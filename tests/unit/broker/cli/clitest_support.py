"""Helpers for the CLI tests: the real API app, in-process, behind a sync transport.

``create_app`` runs over a MemoryStore on an event loop in a helper thread; a small
synchronous httpx transport hands each CLI request to it over ASGI. The CLI takes that
client through ``client.http_override``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI

from broker.store.memory import MemoryStore

T = TypeVar("T")


class LoopThread:
    """An asyncio loop in a daemon thread, for the app and its store."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class SyncASGITransport(httpx.BaseTransport):
    """httpx's ASGITransport, made synchronous by running it on ``LoopThread``."""

    def __init__(self, app: FastAPI, loop: LoopThread) -> None:
        self.asgi = httpx.ASGITransport(app=app)
        self.loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def call() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            inner = httpx.Request(
                request.method, request.url, headers=request.headers, content=body
            )
            resp = await self.asgi.handle_async_request(inner)
            content = await resp.aread()
            return resp.status_code, resp.headers.raw, content

        status, headers, content = self.loop.run(call())
        return httpx.Response(status, headers=headers, content=content, request=request)


@dataclass
class Broker:
    store: MemoryStore
    loop: LoopThread
    token: str

    def put(self, key: str, value: bytes) -> None:
        self.loop.run(self.store.put(key, value))
