#!/usr/bin/env bash
# The one run command: installs whatever is missing (bootstrap.sh), then starts a local
# federation — etcd, 3 broker replicas, N sim agents with fresh certificates — in the
# foreground (Ctrl-C stops it). Arguments go to `meridian dev up`, e.g. --sites 10 --detach.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
bash deploy/dev/bootstrap.sh
exec .venv/bin/meridian dev up "$@"
