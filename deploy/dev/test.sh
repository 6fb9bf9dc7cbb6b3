#!/usr/bin/env bash
# The one test command: installs whatever is missing (bootstrap.sh), then runs the static
# checks (mypy --strict, import-linter, ruff) and every test tier — unit, integration
# (real etcd, real mTLS gRPC), end-to-end (broker and agent processes) and the openstack
# tier (real OpenStack services from deploy/minicloud).
#
# pytest runs twice, one pass after the other: first everything but the openstack tier,
# then the openstack tier, whose fixture starts minicloud (`up --sites 2`, minutes on a
# fresh machine) and FAILS with the failing service's log tail when it cannot — never
# skips. Sequential on purpose: minicloud's start must not load the machine while the
# timing-sensitive end-to-end tests run. minicloud is left running for the next run
# (`deploy/minicloud/minicloud --state-dir .state/minicloud-openstack-tier down` stops it).
#
# Extra arguments go to both passes, e.g. `deploy/dev/test.sh tests/unit -x` (a pass that
# selects nothing is not a failure). With your own `-m EXPR`, pytest runs once, as given.
# MERIDIAN_TEST_OPENSTACK=0 leaves the openstack tier out, for quick local runs.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
bash deploy/dev/bootstrap.sh
export PATH="$repo/.venv/bin:$PATH"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
if [ $# -eq 0 ]; then
    step "ruff"
    ruff check .
    step "mypy --strict"
    mypy
    step "import-linter"
    lint-imports
fi

exitfirst=0
for arg in "$@"; do
    case "$arg" in
        -m | -m* | --markexpr | --markexpr=*)
            step "pytest (your -m selection)"
            exec pytest "$@"
            ;;
        -x | --exitfirst | --maxfail=*) exitfirst=1 ;;
    esac
done

if [ "${MERIDIAN_TEST_OPENSTACK:-1}" = 0 ]; then
    step "pytest: all tiers but openstack (MERIDIAN_TEST_OPENSTACK=0)"
    exec pytest -m "not openstack" "$@"
fi

# pytest's exit 5 means "no tests selected": a pass that selects nothing is not a failure
NOTHING=5
step "pytest: unit, integration, end-to-end"
first=0
pytest -m "not openstack" "$@" || first=$?
if [ "$first" -ne 0 ] && [ "$first" -ne $NOTHING ] && [ "$exitfirst" = 1 ]; then
    exit "$first"
fi
step "pytest: openstack tier (starts deploy/minicloud, or reuses a running one)"
second=0
pytest -m openstack "$@" || second=$?

for status in "$first" "$second"; do
    if [ "$status" -ne 0 ] && [ "$status" -ne $NOTHING ]; then
        echo "deploy/dev/test.sh: FAILED (pytest exit codes: $first, then openstack tier $second)" >&2
        exit "$status"
    fi
done
if [ "$first" -eq $NOTHING ] && [ "$second" -eq $NOTHING ]; then
    exit $NOTHING
fi
exit 0
