"""Where a process's CPU goes: py-spy samples of running processes, summed by function.

``sample(pids, seconds, directory)`` runs ``py-spy record`` (non-blocking, so the
sampled process is not paused) on each process for ``seconds``, keeps the collapsed
stacks in ``directory`` and returns, per process, the functions with the most samples:
``self`` (the function was on top of the stack) and ``total`` (anywhere on it), each as
a share of the samples where a thread of the process held the GIL (ran Python code).
Only Python frames are seen: time inside grpc's C core is charged to the Python frame
that called it, or not seen at all when grpc's own threads spend it.

The benchmarks sample in a window of their own, after the measured one, so that the
sampler's cost is never in a figure.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.perf import harness

RATE = 100  # samples per second
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def py_spy() -> str | None:
    """py-spy on PATH, else beside this interpreter (``.venv/bin/python -m ...`` run
    without the venv on PATH lost a 10,000-agent run to "not found")."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def available() -> bool:
    return py_spy() is not None


def frame_name(frame: str) -> str:
    """``func (path/to/module.py:12)`` → ``module.py:func`` (lines folded together)."""
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    return f"{Path(m['file']).name}:{m['func']}"


def summarize(collapsed: str, top: int = 12) -> dict[str, Any]:
    """The ``top`` functions by self and by total samples in py-spy's collapsed output."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [frame_name(f) for f in stack.split(";") if f.strip()]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        own[frames[-1]] += n
        for name in set(frames):
            total[name] += n

    def share(counter: collections.Counter[str]) -> list[list[Any]]:
        return [[name, round(100 * n / samples, 1)] for name, n in counter.most_common(top)]

    return {
        "samples": samples,
        "self": share(own) if samples else [],
        "total": share(total) if samples else [],
    }


def sample(pids: dict[str, int], seconds: float, directory: Path) -> dict[str, dict[str, Any]]:
    """Sample every process of ``pids`` at once for ``seconds``; their summaries by name."""
    return collect(start(pids, seconds, directory), seconds)


Sampling = dict[str, tuple["subprocess.Popen[bytes]", Path]]


def start(pids: dict[str, int], seconds: float, directory: Path) -> Sampling:
    """Start sampling every process of ``pids`` for ``seconds`` (``collect`` the result)."""
    if not available():
        raise RuntimeError("py-spy not found: bash deploy/dev/bootstrap.sh installs it (dev)")
    directory.mkdir(parents=True, exist_ok=True)
    running = {}
    for name, pid in pids.items():
        out = directory / f"{name}.collapsed"
        argv = [
            py_spy() or "py-spy",
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            str(RATE),
            "--nonblocking",
            "--gil",
            "--format",
            "raw",
            "--output",
            str(out),
        ]
        running[name] = (
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
            out,
        )
    return running


def collect(running: Sampling, seconds: float) -> dict[str, dict[str, Any]]:
    """Wait for the samplers ``start`` began; each process's summary by name."""
    found = {}
    for name, (proc, out) in running.items():
        _, err = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0 or not out.exists():
            found[name] = {"error": err.decode(errors="replace").strip()[-300:]}
            continue
        found[name] = summarize(out.read_text())
        found[name]["busy_percent"] = round(100 * found[name]["samples"] / (RATE * seconds), 1)
    return found


def report(out: harness.Report, label: str, profile: dict[str, dict[str, Any]], s: float) -> None:
    """One table per sampled process of ``profile`` (a failed sampling is trouble)."""
    for name, found in profile.items():
        if "error" in found:
            out.trouble.append(f"py-spy on {label} {name}: {found['error']}")
            continue
        out.table(
            f"py-spy, {label} {name}: share of {found['samples']} Python samples ({s:.0f} s)",
            ["function (self)", "%", "function (total)", "%"],
            [a + b for a, b in zip(found["self"], found["total"], strict=False)],
        )
