"""minicloud's service starts: a start that fails once is retried, twice fails with the log.

Real detached processes through ``deploy/minicloud/mc`` (the tool ``up`` uses), with a tiny
stand-in service instead of an OpenStack one so that the failure is made on purpose: the
first start exits, or every start exits, or the service's port is held by a process that
is not ours (whose answers would otherwise pass the health check).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.minicloud import REPO

sys.path.insert(0, str(REPO / "deploy/minicloud"))
from mc import procs, up  # (the tool is not a package of the project)

# the tool detaches its services on purpose and never waits for them: their Popen objects
# say so when collected
pytestmark = pytest.mark.filterwarnings(r"ignore:subprocess \d+ is still running:ResourceWarning")

FLAKY = """\
import pathlib, sys, time
marker = pathlib.Path(sys.argv[1])
if not marker.exists():
    marker.write_text("tried")
    print("first start: simulated crash", flush=True)
    sys.exit(3)
print("second start: running", flush=True)
time.sleep(600)
"""
CRASHES = 'import sys; print("cannot start: simulated crash", flush=True); sys.exit(4)'


def service(tmp_path: Path, name: str, code: str, *args: str, port: int | None = None) -> Any:
    return procs.Service(
        name,
        [sys.executable, "-c", code, *args],
        tmp_path / "run",
        tmp_path / "log",
        port=port,
        timeout=20,
        settle=1.0,
    )


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Any]]:
    svcs: list[Any] = []
    yield svcs
    for svc in svcs:
        procs.stop(svc.pid_file, timeout=5)


def test_a_service_that_dies_at_its_first_start_is_started_once_more(
    tmp_path: Path, started: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    svc = service(tmp_path, "flaky", FLAKY, str(tmp_path / "tried"))
    started.append(svc)
    assert up.start_and_wait([svc], up.Progress(quiet=True)) == [svc]
    assert procs.running(svc)
    err = capsys.readouterr().err
    assert "flaky exited during start; starting flaky once more" in err
    assert "first start: simulated crash" in err  # the first attempt's log tail
    assert "flaky started on the second attempt" in err


def test_a_service_that_dies_twice_fails_with_its_log_tail(
    tmp_path: Path, started: list[Any]
) -> None:
    svc = service(tmp_path, "broken", CRASHES)
    started.append(svc)
    with pytest.raises(procs.StartError) as failed:
        up.start_and_wait([svc], up.Progress(quiet=True))
    report = failed.value.report()
    assert "broken exited during start" in report
    assert report.count("===== minicloud start") == 2  # both attempts, in the tail
    assert report.rstrip().endswith("cannot start: simulated crash")
    assert not procs.running(svc)


def test_a_port_held_by_another_process_fails_fast(tmp_path: Path, started: list[Any]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        svc = service(tmp_path, "clash", FLAKY, str(tmp_path / "tried"), port=port)
        started.append(svc)
        with pytest.raises(procs.StartError, match=f"port {port} is held by another process"):
            up.start_and_wait([svc], up.Progress(quiet=True))
    assert not (tmp_path / "tried").exists()  # never started
