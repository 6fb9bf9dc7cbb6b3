"""What every benchmark shares: statistics, /proc readings, helper processes, the report.

Percentiles are nearest-rank: p99 of 10 samples is the largest one, p50 of 20 the 10th.
No interpolation, so every figure printed is a value that was actually measured.

Times compared across processes use the wall clock (``time.time()``) of this one
machine, so they are comparable with each other; durations inside one process use the
monotonic clock.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import etcd3
import etcd3.events as etcd_events
from rich.console import Console
from rich.table import Table

from broker.settings import EtcdSettings
from broker.store import keys

T = TypeVar("T")

err = Console(stderr=True, highlight=False)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    """Progress goes to stderr; stdout carries only the tables and the final JSON line."""
    err.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


def now_ms() -> int:
    return int(time.time() * 1000)


# -- statistics ----------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float], digits: int = 1) -> dict[str, float | int]:
    """n, p50, p99, min, max and mean of ``values`` (empty: only n)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), digits),
        "p99": round(percentile(values, 99), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "mean": round(sum(values) / len(values), digits),
    }


def ratio(a: float | int | None, b: float | int | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


# -- /proc ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after the command name: state is field 3, utime 14 and stime 15 (proc(5))
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Resident set size (VmRSS) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class CpuWindow:
    """CPU use of some processes over one wall-clock window, in % of one core."""

    pids: dict[str, list[int]]
    started: float = 0.0
    before: dict[str, float] = field(default_factory=dict)

    def _now(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.pids.items()}

    def start(self) -> None:
        self.before = self._now()
        self.started = time.monotonic()

    def stop(self) -> dict[str, float]:
        after = self._now()
        wall = time.monotonic() - self.started
        return {
            name: round(100 * (after[name] - self.before[name]) / wall, 1) for name in self.pids
        }


def machine() -> dict[str, Any]:
    """What the figures were measured on (the load average says how noisy it was)."""
    return {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


# -- helper processes ----------------------------------------------------------------


class Helper:
    """A child process whose stdout lines are JSON objects, read on a thread."""

    def __init__(self, name: str, argv: Sequence[str], log: Path) -> None:
        self.name = name
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log, "ab")
        self.popen = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"read-{name}")
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(raw))

    def expect(self, match: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The next line ``match`` accepts (earlier lines are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no matching line within {timeout:.0f}s")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.popen.poll() is not None and self.lines.empty():
                    raise RuntimeError(
                        f"{self.name} exited ({self.popen.returncode}) before the expected line"
                    ) from None
                continue
            if match(line):
                return line

    def kill(self) -> float:
        """kill -9 now; returns the wall time just before the signal. Reaps the child."""
        t = time.time()
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)
        return t

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll ``check`` until it returns something other than None/False."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            value = check()
            if value:
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def spread_sites(prefix: str, count: int, replicas: int) -> list[str]:
    """``count`` site ids whose agents first dial replicas 0, 1, 2, ... in turn.

    An agent's first choice is ``crc32(site_id) % len(brokers)`` (siteagent.session).
    """
    free: dict[int, list[str]] = {r: [] for r in range(replicas)}
    k = 0
    while any(len(names) < -(-count // replicas) for names in free.values()):
        name = f"{prefix}-{k:02d}"
        free[zlib.crc32(name.encode()) % replicas].append(name)
        k += 1
    return [free[i % replicas].pop(0) for i in range(count)]


# -- raw etcd ------------------------------------------------------------------------


def etcd_args(settings: EtcdSettings) -> list[str]:
    """The command-line options of a helper process that reaches etcd as ``settings``."""
    return [
        "--endpoint",
        settings.endpoints[0],
        "--ca",
        settings.ca_file,
        "--cert",
        settings.cert_file,
        "--key-file",
        settings.key_file,
    ]


def etcd_client(settings: EtcdSettings) -> Any:
    """A raw etcd3 client (TLS with the client certificate when ``settings`` name one)."""
    host, _, port = settings.endpoints[0].rpartition(":")
    tls: dict[str, str] = {}
    if settings.ca_file:
        tls = {
            "ca_cert": settings.ca_file,
            "cert_cert": settings.cert_file,
            "cert_key": settings.key_file,
        }
    return etcd3.client(host=host, port=int(port), timeout=5, **tls)


@dataclass(frozen=True)
class Seen:
    """One key change, with the wall time this process received it."""

    at: float
    key: str
    value: bytes
    deleted: bool
    create_revision: int


class KeyWatch:
    """Records every change under some etcd prefixes, time-stamped on arrival.

    The timestamps are when the watch delivered the change here: a few milliseconds after
    etcd committed it, the same delay for the baseline as for Meridian.
    """

    def __init__(self, client: Any, prefixes: Sequence[str]) -> None:
        self._client = client
        self._seen: list[Seen] = []
        self._cond = threading.Condition()
        self._ids = [client.add_watch_prefix_callback(p, self._on_change) for p in prefixes]

    def _on_change(self, response: Any) -> None:
        at = time.time()
        if isinstance(response, Exception):
            return
        items = [
            Seen(
                at,
                ev.key.decode(),
                bytes(ev.value),
                isinstance(ev, etcd_events.DeleteEvent),
                int(ev.create_revision),
            )
            for ev in response.events
        ]
        with self._cond:
            self._seen.extend(items)
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self._seen)

    def first(self, since: int, match: Callable[[Seen], bool], timeout: float) -> Seen:
        """The first change recorded after mark ``since`` that ``match`` accepts."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for seen in self._seen[since:]:
                    if match(seen):
                        return seen
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching etcd change within {timeout:.0f}s")
                self._cond.wait(left)

    def close(self) -> None:
        for watch_id in self._ids:
            with contextlib.suppress(Exception):
                self._client.cancel_watch(watch_id)


class UpTracker:
    """Every site's health verdict and the leader, as etcd's watch delivers them.

    Nothing is asked of the broker (polling its API would measure the observer: one
    ``GET /v1/sites`` over 1,000 sites costs the replica's event loop as much as hundreds
    of heartbeats), and nothing is asked of etcd's KV service after the first read: one
    ``Range`` of the verdicts and the leader key, then a watch from that revision, so in a
    steady state (no verdict changes) the observer costs etcd nothing and is not counted
    in the benchmark's etcd requests. A broken watch is taken up again by one more read.
    The moment all are UP is the newest verdict's ``since_ms``, stamped by the leader
    itself.
    """

    def __init__(self, client: Any, root: str, sites: list[str], every: float = 0.5) -> None:
        self._client = client
        self._prefix = root + keys.HEALTH
        self._leader_key = root + keys.LEADER
        self._wanted = set(sites)
        self._state: dict[str, tuple[str, int]] = {}  # site -> (state, since_ms)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._broken = threading.Event()
        self._ids: list[Any] = []
        self.downs = 0
        self.peak = 0
        self.leader = "?"
        self.fence = 0
        self.new_terms = 0
        self.errors = 0
        self.reads = 0  # KV Range requests this observer made (the first read, resyncs)
        self.all_up_at: float | None = None
        self._sync()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        """Take a broken watch up again (etcd busy or restarting)."""
        while not self._stop.wait(every):
            if self._broken.is_set():
                try:
                    self._sync()
                except Exception:
                    self.errors += 1

    def _sync(self) -> None:
        """Read the verdicts and the leader once, then watch both from that revision."""
        self._broken.clear()
        for watch_id in self._ids:
            with contextlib.suppress(Exception):
                self._client.cancel_watch(watch_id)
        self.reads += 2
        resp = self._client.get_prefix_response(self._prefix)
        leader_value, leader_meta = self._client.get(self._leader_key)
        with self._cond:
            for kv in resp.kvs:
                self._apply_verdict(kv.key.decode(), bytes(kv.value))
            fence = int(leader_meta.create_revision) if leader_value else 0
            self._apply_leader(leader_value, fence)
            self._settle()
        start = int(resp.header.revision) + 1
        watch = self._client
        self._ids = [
            watch.add_watch_prefix_callback(self._prefix, self._on_change, start_revision=start),
            watch.add_watch_callback(self._leader_key, self._on_change, start_revision=start),
        ]

    def _on_change(self, response: Any) -> None:
        if isinstance(response, Exception):
            self.errors += 1
            self._broken.set()
            return
        with self._cond:
            for ev in response.events:
                key = ev.key.decode()
                deleted = isinstance(ev, etcd_events.DeleteEvent)
                if key == self._leader_key:
                    self._apply_leader(None if deleted else ev.value, int(ev.create_revision))
                elif deleted:
                    self._state.pop(key[len(self._prefix) :], None)
                else:
                    self._apply_verdict(key, bytes(ev.value))
            self._settle()

    def _apply_verdict(self, key: str, value: bytes) -> None:
        site = key[len(self._prefix) :]
        if site not in self._wanted:
            return
        verdict = json.loads(value)
        state = verdict["state"]
        if state == "DOWN" and self._state.get(site, ("", 0))[0] == "UP":
            self.downs += 1
        self._state[site] = (state, int(verdict.get("since_ms", 0)))

    def _apply_leader(self, value: bytes | None, create_revision: int) -> None:
        self.leader = value.decode() if value else "none"
        fence = create_revision if value else 0
        if fence and fence != self.fence:
            self.new_terms += 1
        self.fence = fence

    def _settle(self) -> None:
        up = self.up()
        self.peak = max(self.peak, up)
        if self.all_up_at is None and up == len(self._wanted):
            self.all_up_at = max(since for _, since in self._state.values()) / 1000
        self._cond.notify_all()

    def up(self) -> int:
        return sum(1 for state, _ in self._state.values() if state == "UP")

    def reset(self) -> None:
        with self._cond:
            self.new_terms = 0
            self.downs = 0
            self.peak = self.up()
            self.all_up_at = None

    def wait(self, done: Callable[[], bool], timeout: float, progress: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        next_say = time.monotonic() + progress
        with self._cond:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 1.0))
                if time.monotonic() >= next_say:
                    next_say += progress
                    say(
                        f"  {self.up()}/{len(self._wanted)} UP (peak {self.peak}), "
                        f"{self.downs} UP→DOWN so far; leader: {self.leader}"
                    )
            return True

    def wait_all_up(self, timeout: float) -> float | None:
        """Wall time at which every site was UP, or None at the timeout."""
        self.wait(lambda: self.all_up_at is not None, timeout)
        return self.all_up_at

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for watch_id in self._ids:
            with contextlib.suppress(Exception):
                self._client.cancel_watch(watch_id)


# -- the run -------------------------------------------------------------------------


def common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: fewer trials, shorter windows"
    )
    parser.add_argument(
        "--keep-state",
        action="store_true",
        help="keep the state directory (logs, PKI, etcd data) instead of removing it",
    )


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def state_dir(name: str, keep: bool, report: Report | None = None) -> Iterator[Path]:
    """A fresh state directory; SIGTERM/SIGINT unwind the run so every process is stopped.

    It is kept (logs, PKI, etcd data) when asked, when the run fails, and when the report
    records trouble worth a look.
    """
    # a shell starts background jobs with SIGINT ignored; a benchmark must still stop cleanly
    signal.signal(signal.SIGINT, _exit_on_signal)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    path = Path(tempfile.mkdtemp(prefix=f"meridian-perf-{name}-"))
    say(f"state directory: {path}")
    try:
        yield path
    except BaseException:
        keep = True
        raise
    finally:
        if keep or (report is not None and report.trouble):
            say(f"state kept in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def run_reported(
    name: str,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, Path, Report], None],
) -> None:
    """Run one benchmark in a fresh state directory, then print its report (the JSON
    object last)."""
    report = Report(name)
    with state_dir(name, args.keep_state, report) as state:
        run(args, state, report)
    report.emit()


class Report:
    """Tables for people, then one JSON object (the last line of stdout) for machines."""

    def __init__(self, benchmark: str) -> None:
        self.figures: dict[str, Any] = {"benchmark": benchmark, "machine_start": machine()}
        self.tables: list[Table] = []
        self.notes: list[str] = []
        self.trouble: list[str] = []

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = Table(title=title, title_justify="left")
        for i, column in enumerate(columns):
            table.add_column(column, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*("—" if cell is None else str(cell) for cell in row))
        self.tables.append(table)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def emit(self) -> None:
        self.figures["machine_end"] = machine()
        out = Console(highlight=False, width=max(130, shutil.get_terminal_size().columns))
        for table in self.tables:
            out.print(table)
            out.print()
        for text in self.notes:
            out.print(f"• {text}")
        for text in self.trouble:
            out.print(f"[bold]! {text}[/bold]")
        self.figures["trouble"] = self.trouble
        sys.stdout.flush()
        print(json.dumps(self.figures, separators=(",", ":")), flush=True)


def verdict(value: float | int | None, target: float) -> str:
    if value is None:
        return "no data"
    return "PASS" if value <= target else "FAIL"


def renice(pid: int, niceness: int) -> None:
    """Set every thread of ``pid`` to ``niceness`` (Linux schedules threads: a process's
    niceness is its threads'; threads started later inherit it from their creator)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.setpriority(os.PRIO_PROCESS, int(task.name), niceness)
