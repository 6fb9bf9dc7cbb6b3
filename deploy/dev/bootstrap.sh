#!/usr/bin/env bash
# Installs what Meridian's development and tests need, and nothing twice:
#   - Debian packages: etcd-server/etcd-client (3.4), when `etcd` is missing; the data-plane
#     tools the site gateway and its tests use (iproute2, iputils-ping, iperf3, ethtool) and
#     the data path's userspace Open vSwitch (openvswitch-switch),
#     each only when its command is missing;
#   - .venv with Meridian and its dev extras, re-installed only when pyproject.toml changed.
# Idempotent and quick when everything is there. Sourced or run; prints what it does.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

say() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }

need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server etcd-client)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# data plane (site gateway, netns tests, the stitching benchmark; the data-path profile's
# userspace OVS, which its tests start themselves): command -> package
for pair in ip:iproute2 ping:iputils-ping iperf3:iperf3 ethtool:ethtool \
    ovs-vswitchd:openvswitch-switch; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
if ((${#need_apt[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        SUDO=sudo
    else
        SUDO=
    fi
    say "installing Debian packages: ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${need_apt[@]}" >/dev/null
fi

py=${PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    say "Meridian needs Python 3.11 or newer; set PYTHON=/path/to/python3.11"
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    if ! "$py" -m venv .venv 2>/dev/null; then
        say "python3 -m venv failed; installing python3-venv"
        DEBIAN_FRONTEND=noninteractive ${SUDO:-} apt-get install -y -qq python3-venv >/dev/null
        "$py" -m venv .venv
    fi
fi
stamp=.venv/.meridian-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing Meridian into .venv (pip install -e '.[dev]')"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1
    # pip's own notices go to a log; its errors are shown
    if ! .venv/bin/python -m pip install -q -e '.[dev]' >.venv/pip.log 2>&1; then
        grep -v '^WARNING: Location' .venv/pip.log | tail -20 >&2
        say "pip install failed (full log: .venv/pip.log)"
        exit 1
    fi
    echo "$want" >"$stamp"
fi
