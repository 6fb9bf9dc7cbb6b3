"""Benchmarks (DESIGN.md, "Performance is measured, not asserted").

Each module is runnable from the repository root (``python -m tests.perf.failover``,
``detection``, ``fanin``, or ``deploy/dev/bench.sh``), prints rich tables and, as its last
line, one JSON object with the figures. Every figure is set against a baseline measured
in the same run, on the same machine, so the ratio survives a noisy host. pytest does
not collect this folder (``norecursedirs``).
"""
