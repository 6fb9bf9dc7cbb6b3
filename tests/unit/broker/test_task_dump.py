"""SIGUSR1's task dump: every task of the loop is logged with the frame it waits in."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from broker import running


async def waits_here(gate: asyncio.Event) -> None:
    await gate.wait()


async def test_every_task_is_logged_with_where_it_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = asyncio.Event()
    task = asyncio.create_task(waits_here(gate), name="the-waiter")
    await asyncio.sleep(0)
    with caplog.at_level("WARNING", logger="broker.running"):
        count = running.dump_tasks()
    gate.set()
    await task
    dumped = [r.getMessage() for r in caplog.records if "task the-waiter" in r.getMessage()]
    assert count >= 2 and len(dumped) == 1, caplog.text
    assert "test_task_dump.py" in dumped[0] and "in waits_here" in dumped[0]
    assert f"{count} tasks dumped" in caplog.text


async def test_sigusr1_dumps_the_tasks_of_the_loop_it_is_installed_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, running.dump_tasks)
    try:
        with caplog.at_level("WARNING", logger="broker.running"):
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(100):
                if "tasks dumped" in caplog.text:
                    break
                await asyncio.sleep(0.01)
        assert "tasks dumped" in caplog.text
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
