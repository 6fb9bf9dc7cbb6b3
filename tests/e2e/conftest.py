"""A real local federation per test module: etcd, 3 broker processes, agent processes."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.devfed.federation import Federation
from tests.support.federation import running_federation

SITES = [f"site-{i:03d}" for i in range(1, 7)]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.etcd)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """On a failure, show which processes died and the tails of their logs.

    A CI failure is often one run on a machine nobody can log into afterwards: the
    report has to carry the broker's own account of what happened.
    """
    outcome = yield
    report = outcome.get_result()
    fed = getattr(item, "funcargs", {}).get("federation")
    if report.failed and isinstance(fed, Federation):
        report.sections.append(("federation processes", describe(fed)))


def describe(fed: Federation, lines: int = 40) -> str:
    """Each process alive or dead; the log tails of dead ones and of every broker."""
    out = []
    for name, proc in sorted(fed.running.items()):
        alive = proc.alive()
        code = proc.popen.returncode if proc.popen is not None else None
        out.append(f"{name}: {'alive' if alive else f'DEAD (exit {code})'}")
        if not alive or name.startswith("broker"):
            try:
                tail = proc.log.read_text(errors="replace").splitlines()[-lines:]
            except OSError as exc:
                tail = [f"(log unreadable: {exc})"]
            out.extend(f"    {line}" for line in tail)
    return "\n".join(out)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with running_federation(Path(tmp_path_factory.mktemp("federation")), SITES) as fed:
        yield fed
