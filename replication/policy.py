"""Replication policies: which sites should hold an image.

A policy is a ``Selector`` (labels and regions, all must match), ``AllSites``, or
``OnDemand`` (one site that placement picked and that lacks the image; it gets the
highest priority so a waiting VNF goes first). Resolving a policy against the registered
sites is pure; an unknown site named on demand is an error, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from replication import errors
from replication.catalog import SiteId

ON_DEMAND_PRIORITY = 100
POLICY_PRIORITY = 10


@dataclass(frozen=True, slots=True)
class SiteInfo:
    """What a policy may select on."""

    id: SiteId
    region: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Selector:
    """Sites whose region and labels match every term (``region=eu,tier=edge``)."""

    terms: Mapping[str, str]

    @classmethod
    def parse(cls, text: str) -> Selector:
        terms: dict[str, str] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise errors.InvalidImage("selector", f"{part!r} is not key=value")
            terms[key.strip()] = value.strip()
        if not terms:
            raise errors.InvalidImage("selector", "empty; use key=value[,key=value]")
        return cls(terms)

    def matches(self, site: SiteInfo) -> bool:
        for key, value in self.terms.items():
            have = site.region if key == "region" else site.labels.get(key)
            if have != value:
                return False
        return True


@dataclass(frozen=True, slots=True)
class AllSites:
    """Every registered site."""


@dataclass(frozen=True, slots=True)
class OnDemand:
    """One site, now, ahead of everything else."""

    site: SiteId


Policy = Selector | AllSites | OnDemand


def priority(policy: Policy) -> int:
    return ON_DEMAND_PRIORITY if isinstance(policy, OnDemand) else POLICY_PRIORITY


def resolve(policy: Policy, sites: Iterable[SiteInfo]) -> frozenset[SiteId]:
    """The sites the policy wants the image at."""
    known = {s.id: s for s in sites}
    if isinstance(policy, OnDemand):
        if policy.site not in known:
            raise errors.UnknownSite(policy.site)
        return frozenset({policy.site})
    if isinstance(policy, AllSites):
        return frozenset(known)
    return frozenset(s.id for s in known.values() if policy.matches(s))


def parse(text: str) -> Policy | None:
    """``""`` (no policy: explicit targets only), ``all``, or a selector."""
    text = text.strip()
    if not text:
        return None
    if text == "all":
        return AllSites()
    return Selector.parse(text)
