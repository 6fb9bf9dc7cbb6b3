"""The sim driver's control file: faults a test injects into a running sim site.

A YAML (or JSON) file the sim re-reads when it changes, checked at most every
``CHECK_S`` seconds, so a test can fail a site's host or lose a server out of band in an
agent it runs as a separate process::

    failed_hosts: [site-003-cmp-001]     # hosts down now (servers on them FAILED)
    lost: [server/vnf-1-fw-0]            # objects gone out of band (applied once each)

Invariant: a file that cannot be read or parsed changes nothing (the previous state
holds) and is logged once per change; the file is never written by the agent.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

CHECK_S = 0.2


@dataclass(frozen=True, slots=True)
class Faults:
    failed_hosts: frozenset[str] = frozenset()
    lost: tuple[tuple[str, str], ...] = ()
    """(kind, name) of objects gone out of band."""


@dataclass(slots=True)
class Control:
    path: Path
    _mtime: float = -1.0
    _checked: float = 0.0
    faults: Faults = field(default_factory=Faults)

    def poll(self) -> Faults | None:
        """The faults when the file changed since the last call, else ``None``."""
        now = time.monotonic()
        if now - self._checked < CHECK_S:
            return None
        self._checked = now
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            mtime = 0.0
        except OSError as exc:
            log.warning("sim control %s: %s", self.path, exc.strerror)
            return None
        if mtime == self._mtime:
            return None
        self._mtime = mtime
        found = parse(self.path.read_text()) if mtime else Faults()
        if found is None:
            log.warning("sim control %s: not a mapping of failed_hosts/lost; ignored", self.path)
            return None
        self.faults = found
        return found


def parse(text: str) -> Faults | None:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict):
        return None
    hosts = data.get("failed_hosts") or []
    lost = data.get("lost") or []
    if not isinstance(hosts, list) or not isinstance(lost, list):
        return None
    pairs = []
    for item in lost:
        kind, sep, name = str(item).partition("/")
        if not sep or not name:
            return None
        pairs.append((kind, name))
    return Faults(frozenset(str(h) for h in hosts), tuple(pairs))
