"""cpulist parsing: the kernel's format, table-driven, and the round trip."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siteagent.hardware import cpulist


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("", set()),
        ("\n", set()),
        ("0", {0}),
        ("0-3", {0, 1, 2, 3}),
        ("0-3,8,10-11\n", {0, 1, 2, 3, 8, 10, 11}),
        ("2,0-1", {0, 1, 2}),
        ("0-7:2", {0, 2, 4, 6}),
        ("5-5", {5}),
    ],
)
def test_parse(text: str, cpus: set[int]) -> None:
    assert cpulist.parse(text) == cpus


@pytest.mark.parametrize("text", ["a", "3-1", "-1", "0-", "1-2-3", "0-3:0", "1,,x"])
def test_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="bad cpulist part"):
        cpulist.parse(text)


@pytest.mark.parametrize(
    ("cpus", "text"),
    [(set(), ""), ({3}, "3"), ({0, 1, 2, 3, 8, 10, 11}, "0-3,8,10-11"), ({1, 3}, "1,3")],
)
def test_format(cpus: set[int], text: str) -> None:
    assert cpulist.format(cpus) == text


@settings(database=None)
@given(st.sets(st.integers(min_value=0, max_value=512)))
def test_format_then_parse_is_identity(cpus: set[int]) -> None:
    assert cpulist.parse(cpulist.format(cpus)) == cpus
