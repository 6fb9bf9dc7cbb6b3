#!/usr/bin/env bash
# The one benchmark command (DESIGN.md, "Performance is measured, not asserted"): installs
# whatever is missing (bootstrap.sh), then runs benchmarks from tests/perf. Each compares
# against a baseline measured in the same run, prints tables and, as its LAST line, one
# JSON object with the figures.
#
#   deploy/dev/bench.sh failover  [--trials 10]          leader kill -9 → controllers running
#   deploy/dev/bench.sh detection [--idle-seconds 600]   agent kill -9 → DOWN; false DOWNs
#   deploy/dev/bench.sh site_failover [--quick]          site lost → standbys promoted (1,000 VNFs)
#   deploy/dev/bench.sh fanin     [--agents 10000 --replicas 3 --heartbeat 30]   fan-in, cold herd
#   deploy/dev/bench.sh session_memory [--agents 1000]  where a held stream's memory goes
#   deploy/dev/bench.sh stitching [--quick]              tunnel vs raw veth, verify, allocator (root)
#   deploy/dev/bench.sh placement [--quick]              decisions, API dry runs, vs Placement
#   deploy/dev/bench.sh survivability [--quick]          N+1 report, one-site what-if (1,000 sites)
#   deploy/dev/bench.sh datapath  [--quick]              profile apply 8×32 ports; netdev vs veth (root)
#   deploy/dev/bench.sh quota | replication | site_apply   (see each module's docstring)
#   deploy/dev/bench.sh all       [--quick]              every benchmark above in turn; flags
#                                                        common to all only (--quick)
#
# `.venv/bin/python -m tests.perf.<name> --help` lists every flag; --quick is a smoke run.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

# every benchmark of tests/perf (the rest there are their helpers)
BENCHMARKS=(failover detection fanin session_memory stitching placement quota replication site_apply datapath site_failover survivability)
which=${1:-all}
[ $# -gt 0 ] && shift
case "$which" in
    -h | --help | help)
        sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    all) ;;
    harness | rawelection | rawstream | swarm | traced_broker | imageswarm | placement_api | placement_peer | fleet | profiling | fanin_headline | fanin_clients | __init__)
        echo "$which is a helper of the benchmarks, not a benchmark" >&2
        exit 2
        ;;
    *)
        # any runnable module of tests/perf (failover, detection, fanin, ...)
        if [ ! -f "tests/perf/$which.py" ]; then
            echo "unknown benchmark: $which (${BENCHMARKS[*]} or all)" >&2
            exit 2
        fi
        ;;
esac
bash deploy/dev/bootstrap.sh
if [ "$which" = all ]; then
    failed=()
    for name in "${BENCHMARKS[@]}"; do
        echo "== $name" >&2
        .venv/bin/python -m "tests.perf.$name" "$@" || failed+=("$name")
    done
    if [ ${#failed[@]} -gt 0 ]; then
        echo "failed: ${failed[*]}" >&2
        exit 1
    fi
else
    exec .venv/bin/python -m "tests.perf.$which" "$@"
fi
