"""Protocol version negotiation (invariant 10: a broker serves agents one minor behind)."""

from __future__ import annotations

from dataclasses import dataclass

import meridian.v1 as wire


@dataclass(frozen=True, slots=True, order=True)
class Version:
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


CURRENT = Version(wire.MAJOR, wire.MINOR)


def served(current: Version = CURRENT) -> tuple[Version, ...]:
    """The versions a broker at ``current`` accepts, oldest first."""
    oldest = max(current.minor - 1, 0)
    return tuple(Version(current.major, m) for m in range(oldest, current.minor + 1))


def negotiate(agent: Version, current: Version = CURRENT) -> Version | str:
    """The version both speak, or the reason the agent is refused."""
    accepted = served(current)
    if agent in accepted:
        return agent
    names = ", ".join(str(v) for v in accepted)
    if agent > current:
        advice = "upgrade the brokers first, or run an agent release that speaks"
    else:
        advice = "upgrade the agent to a release that speaks"
    return f"protocol {agent} is not served (this broker serves {names}): {advice} {names}"
