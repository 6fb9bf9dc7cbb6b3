"""An agent swarm that reports its heartbeat lags: the fan-in benchmark's load.

``python -m tests.perf.swarm --stats-dir D --name N --config a.toml --config b.toml ...``
runs one agent per config from the same parts ``python -m siteagent run`` is made of
(``siteagent.running.make_driver``, ``Reconciler``, ``Session``: each agent its own
certificate, channel and mTLS stream), but keeps the sessions in hand. On SIGUSR1 it
writes every session's heartbeat ack round trips (``SessionStats.lags_ms``) gathered
since the previous SIGUSR1 to ``D/N.<k>.json`` and forgets them, so the benchmark can cut
a steady window out of a long run. ``--ramp R`` starts each agent at a random moment
within the first R seconds instead of all at once. ``--hold`` builds every agent first
(settings, certificate, driver, reconciler), writes ``D/N.ready`` and dials only on
SIGUSR2: a benchmark holding several swarms can start thousands of agents dialling at
the same moment, their start-up not in the time it measures. SIGTERM or SIGINT stops it.

Light: one process, one event loop and one thread for thousands of agents; what an agent
holds is its session (channel, stream, a few tasks), its sim driver and its reconciler.

Nothing in ``siteagent`` changes for this: the session already records the lags, this
process only reads them.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import random
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from siteagent import running, settings
from siteagent.reconciler import Reconciler
from siteagent.session import Session

log = logging.getLogger("swarm")


def dump(sessions: list[Session], directory: Path, name: str, k: int) -> None:
    lags: list[float] = []
    for session in sessions:
        lags.extend(round(lag, 2) for lag in session.stats.lags_ms)
        session.stats.lags_ms.clear()
    record: dict[str, Any] = {
        "name": name,
        "k": k,
        "t": time.time(),
        "agents": len(sessions),
        "connected": sum(1 for s in sessions if s.stats.connected.is_set()),
        "connects": sum(s.stats.connects for s in sessions),
        "welcomed": sum(s.stats.welcomed for s in sessions),
        "refused": sum(s.stats.refused for s in sessions),
        "timeouts": sum(s.stats.timeouts for s in sessions),
        "acked": sum(s.stats.acked for s in sessions),
        "lags_ms": lags,
    }
    path = directory / f"{name}.{k}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def _report(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped: %s", task.get_name(), task.exception())


async def later(go: asyncio.Event, delay: float, coro: Coroutine[Any, Any, None]) -> None:
    await go.wait()
    await asyncio.sleep(delay)
    await coro


async def run(configs: list[Path], directory: Path, name: str, ramp: float, hold: bool) -> None:
    loop = asyncio.get_running_loop()
    sessions: list[Session] = []
    tasks: list[asyncio.Task[Any]] = []
    go = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR2, go.set)
    if not hold:
        go.set()
    for path in configs:
        agent = settings.load(path)
        driver = running.make_driver(agent)
        reconciler = Reconciler(driver)
        session = Session(agent, driver, reconciler)
        sessions.append(session)
        delay = random.uniform(0, ramp) if ramp > 0 else 0.0
        tasks.append(asyncio.create_task(reconciler.run(), name=f"reconciler-{agent.site_id}"))
        tasks.append(
            asyncio.create_task(later(go, delay, session.run()), name=f"session-{agent.site_id}")
        )
    if hold:
        (directory / f"{name}.ready").write_text(str(len(sessions)))
    for task in tasks:
        task.add_done_callback(_report)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    counter = itertools.count(1)
    loop.add_signal_handler(signal.SIGUSR1, lambda: dump(sessions, directory, name, next(counter)))
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", type=Path, required=True)
    parser.add_argument("--stats-dir", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument(
        "--ramp", type=float, default=0.0, help="spread the agents' starts over this many seconds"
    )
    parser.add_argument(
        "--hold", action="store_true", help="build every agent, then dial only on SIGUSR2"
    )
    parser.add_argument(
        "--nice", type=int, default=0, help="raise this process's niceness by this much first"
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    if args.nice:
        os.nice(args.nice)  # before any thread: every thread inherits it
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args.stats_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(args.config, args.stats_dir, args.name, args.ramp, args.hold))


if __name__ == "__main__":
    main()
