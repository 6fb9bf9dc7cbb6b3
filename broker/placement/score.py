"""Scorers: rank the feasible sites for one ask; higher is better, every term in [0, 1].

``UtilizationScorer`` packs (prefer busy sites, keep empty ones empty) or spreads (prefer
idle sites); ``CostScorer`` prefers cheap sites (a site's ``cost`` label); ``LatencyScorer``
prefers sites closer to the locations the ask is bound to. The descriptor's weights
combine them (nomad's ``ScoreNormalizationIterator``: a weighted mean of normalised terms).

Invariant: scores are a pure function of the snapshot and the ask; ties keep site order,
so the same snapshot and descriptor always give the same plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from broker.models.vnf import Preferences
from broker.placement.feasible import Ask
from broker.placement.snapshot import FloatArray, Snapshot


class Scorer(Protocol):
    name: str

    def weight(self, prefs: Preferences) -> float: ...

    def score(self, snap: Snapshot, ask: Ask, prefs: Preferences) -> FloatArray:
        """One score in [0, 1] per site of ``snap.order``."""
        ...


class UtilizationScorer:
    name = "utilization"

    def weight(self, prefs: Preferences) -> float:
        return prefs.weights.utilization

    def score(self, snap: Snapshot, ask: Ask, prefs: Preferences) -> FloatArray:
        util = np.clip(snap.util, 0.0, 1.0)
        return util if prefs.strategy == "pack" else 1.0 - util


class CostScorer:
    name = "cost"

    def weight(self, prefs: Preferences) -> float:
        return prefs.weights.cost

    def score(self, snap: Snapshot, ask: Ask, prefs: Preferences) -> FloatArray:
        top = float(snap.cost.max()) if len(snap.cost) else 0.0
        if top <= 0:
            return np.ones(len(snap.order))
        result: FloatArray = 1.0 - snap.cost / top
        return result


class LatencyScorer:
    name = "latency"

    def weight(self, prefs: Preferences) -> float:
        return prefs.weights.latency

    def score(self, snap: Snapshot, ask: Ask, prefs: Preferences) -> FloatArray:
        total = np.zeros(len(snap.order))
        if not ask.bounds:
            return total + 1.0
        for bound in ask.bounds:
            ms = snap.latency_to(bound.location)
            total += np.clip(1.0 - ms / bound.max_ms, 0.0, 1.0)
        result: FloatArray = total / len(ask.bounds)
        return result


def default_scorers() -> list[Scorer]:
    return [UtilizationScorer(), CostScorer(), LatencyScorer()]


def combined(snap: Snapshot, ask: Ask, prefs: Preferences, scorers: Sequence[Scorer]) -> FloatArray:
    """The weighted mean of every scorer with a positive weight."""
    total = np.zeros(len(snap.order))
    weights = 0.0
    for scorer in scorers:
        w = scorer.weight(prefs)
        if w > 0:
            total += w * scorer.score(snap, ask, prefs)
            weights += w
    if weights:
        total /= weights
    return total
