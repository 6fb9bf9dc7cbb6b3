#!/usr/bin/env bash
# The one benchmark command (DESIGN.md, "Performance is measured, not asserted"): installs
# whatever is missing (bootstrap.sh), then runs benchmarks from tests/perf. Each compares
# against a baseline measured in the same run, prints tables and, as its LAST line, one
# JSON object with the figures.
#
#   deploy/dev/bench.sh failover  [--trials 10]          leader kill -9 → controllers running
#   deploy/dev/bench.sh detection [--idle-seconds 600]   agent kill -9 → DOWN; false DOWNs
#   deploy/dev/bench.sh fanin     [--agents 1000]        1,000 agents on one replica
#   deploy/dev/bench.sh stitching [--quick]              tunnel vs raw veth, verify, allocator (root)
#   deploy/dev/bench.sh all       [--quick]              all three; only --quick, --keep-state
#
# `.venv/bin/python -m tests.perf.<name> --help` lists every flag; --quick is a smoke run.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

which=${1:-all}
[ $# -gt 0 ] && shift
case "$which" in
    -h | --help | help)
        sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    all) ;;
    harness | rawelection | rawstream | swarm | __init__)
        echo "$which is a helper of the benchmarks, not a benchmark" >&2
        exit 2
        ;;
    *)
        # any runnable module of tests/perf (failover, detection, fanin, ...)
        if [ ! -f "tests/perf/$which.py" ]; then
            echo "unknown benchmark: $which (failover, detection, fanin or all)" >&2
            exit 2
        fi
        ;;
esac
bash deploy/dev/bootstrap.sh
if [ "$which" = all ]; then
    for name in failover detection fanin; do
        .venv/bin/python -m "tests.perf.$name" "$@"
    done
else
    exec .venv/bin/python -m "tests.perf.$which" "$@"
fi
