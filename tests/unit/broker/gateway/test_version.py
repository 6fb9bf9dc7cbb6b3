"""Version negotiation: a broker serves its own minor and the one before, nothing else."""

from __future__ import annotations

import pytest

from broker.gateway import version
from broker.gateway.version import Version

CURRENT = Version(1, 2)  # meridian.v1 1.2: ImageTransfer served


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        (Version(1, 2), Version(1, 2)),
        (Version(1, 1), Version(1, 1)),
        (Version(1, 0), "upgrade the agent"),
        (Version(1, 3), "upgrade the brokers"),
        (Version(2, 0), "upgrade the brokers"),
        (Version(0, 9), "upgrade the agent"),
    ],
)
def test_negotiate(agent: Version, expected: Version | str) -> None:
    result = version.negotiate(agent, CURRENT)
    if isinstance(expected, Version):
        assert result == expected
    else:
        assert isinstance(result, str)
        assert expected in result
        assert "1.1, 1.2" in result


def test_two_behind_is_refused() -> None:
    result = version.negotiate(Version(1, 3), Version(1, 5))
    assert isinstance(result, str) and "1.4, 1.5" in result
    assert version.served(Version(1, 0)) == (Version(1, 0),)


def test_current_is_the_wire_version() -> None:
    assert version.CURRENT == CURRENT
