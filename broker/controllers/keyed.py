"""One step at a time per key, for leader controllers that work object by object.

``kick(key)`` runs ``step(key)`` in its own task unless one runs for that key already;
then it runs once more right after, so a change that arrives mid-step is never missed
and a key never has two steps at once. Temporary errors (a conflict, etcd away, the
quota ledger's) are left to the next kick or resync; ``FencedOut`` is kept and raised by
``check`` (the controller's resync), ending the controller: a deposed leader does no
more work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from broker import errors
from quota import errors as quota_errors

log = logging.getLogger(__name__)


class Steps:
    def __init__(
        self, step: Callable[[str], Awaitable[None]], what: str, *, concurrency: int = 1_000_000
    ) -> None:
        self._step, self._what = step, what
        self._limit = asyncio.Semaphore(concurrency)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._failed: BaseException | None = None

    def kick(self, key: str) -> None:
        if key in self._running:
            self._again.add(key)
            return
        self._running[key] = asyncio.get_running_loop().create_task(self._handle(key))

    async def _handle(self, key: str) -> None:
        try:
            async with self._limit:
                again = True
                while again:
                    self._again.discard(key)
                    await self._step(key)
                    again = key in self._again
        except (errors.Conflict, errors.StoreUnavailable, quota_errors.Temporary) as exc:
            log.info("%s %s: %s; will retry", self._what, key, exc)
        except errors.FencedOut as exc:
            self._failed = exc
        except Exception:
            log.exception("%s %s: step failed", self._what, key)
        finally:
            self._running.pop(key, None)

    def check(self) -> None:
        """Raise the ``FencedOut`` a step met, if any."""
        if self._failed is not None:
            raise self._failed

    async def drain(self) -> None:
        """Wait until no key is being worked on (for tests); then ``check``."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
        self.check()
