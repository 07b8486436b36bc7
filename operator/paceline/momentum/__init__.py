"""Asynchronous mode: measure implicit momentum from staleness and retune explicit momentum so that
explicit + implicit stays on target ("Asynchrony begets momentum", Mitliagkas et al. 2016).
See docs/momentum.md.
"""

from paceline.momentum.estimator import (
    MomentumEstimate,
    StalenessEstimator,
    momentum_from_staleness,
    theory_momentum,
)
from paceline.momentum.policy import MomentumController, MomentumDecision, decide_momentum, explicit_momentum
from paceline.momentum.settings import MomentumPolicy, MomentumSettings

__all__ = [
    "MomentumController",
    "MomentumDecision",
    "MomentumEstimate",
    "MomentumPolicy",
    "MomentumSettings",
    "StalenessEstimator",
    "decide_momentum",
    "explicit_momentum",
    "momentum_from_staleness",
    "theory_momentum",
]
