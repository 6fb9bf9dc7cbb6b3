"""The kernel's CPU list format ("0-3,8,10-11", also "0-7:2" strides) to sets and back."""

from __future__ import annotations

from collections.abc import Iterable


def parse(text: str) -> frozenset[int]:
    """The CPUs named by a cpulist; an empty or blank list names none.

    Raises ``ValueError`` naming the bad part.
    """
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        cpus.update(_parse_part(part))
    return frozenset(cpus)


def _parse_part(part: str) -> range:
    span, _, stride_text = part.partition(":")
    first_text, dash, last_text = span.partition("-")
    try:
        first = int(first_text)
        last = int(last_text) if dash else first
        stride = int(stride_text) if stride_text else 1
    except ValueError:
        raise ValueError(f"bad cpulist part {part!r}") from None
    if first < 0 or last < first or stride < 1:
        raise ValueError(f"bad cpulist part {part!r}")
    return range(first, last + 1, stride)


def format(cpus: Iterable[int]) -> str:
    """The shortest cpulist for ``cpus``, ranges merged: {0,1,2,3,8} → "0-3,8"."""
    runs: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
