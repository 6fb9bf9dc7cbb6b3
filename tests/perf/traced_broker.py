"""A broker replica under tracemalloc, for ``tests.perf.session_memory``.

``python -m tests.perf.traced_broker --config broker.toml --dump-dir D`` runs the replica
exactly as ``meridian broker run`` does, with ``tracemalloc`` tracing (``--frames`` deep)
from just after the imports (traced, they take minutes; they are not sessions anyway);
each SIGUSR2 writes a snapshot to ``D/<k>.snapshot`` (then ``D/<k>.done``), so the
benchmark can diff what the Python heap holds before and after a thousand sessions open.
Nothing in ``broker`` knows about it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import signal
import tracemalloc
from pathlib import Path
from types import FrameType


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--dump-dir", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    from broker import running, settings  # imported before tracing: imports are not sessions

    tracemalloc.start(args.frames)
    args.dump_dir.mkdir(parents=True, exist_ok=True)
    counter = itertools.count(1)

    def dump(signum: int, frame: FrameType | None) -> None:
        k = next(counter)
        tracemalloc.take_snapshot().dump(str(args.dump_dir / f"{k}.snapshot"))
        (args.dump_dir / f"{k}.done").write_text("")

    signal.signal(signal.SIGUSR2, dump)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(running.run(settings.load(args.config)))


if __name__ == "__main__":
    main()
