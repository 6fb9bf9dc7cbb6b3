"""The local federation's state is its owner's alone: the dir 0700, cli.toml 0600.

cli.toml holds the dev admin token, and the state dir every private key; both were
created with the default umask (world-readable) before.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from broker.devfed.federation import Federation


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_dir_and_cli_toml_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        state = tmp_path / "dev"
        state.mkdir(mode=0o755)  # left open by an earlier version: tightened
        fed = Federation(state=state, brokers=1)
        fed.prepare()
        cli = state / "cli.toml"
        cli.write_text("stale\n")
        cli.chmod(0o644)
        fed.write_records()
    finally:
        os.umask(old)
    assert mode(state) == 0o700
    assert mode(cli) == 0o600
    assert fed.token in cli.read_text()
    assert mode(fed.token_file) == 0o600
