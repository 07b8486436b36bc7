"""Straggler → batch-share policy: per-worker step-time estimates, straggler classification, share
optimisation (minimise E[max_m T_m(b_m)] with Σ b_m = B) and the hysteresis that decides when to apply it.
See docs/balancing.md.
"""

from paceline.balancer.decision import RebalanceDecision, ShareChange, decide_rebalance
from paceline.balancer.estimator import EstimatorConfig, Observation, StepTimeEstimator, StepTimeModel
from paceline.balancer.optimizer import (
    ShareSolution,
    equal_split,
    expected_max_step_time,
    expected_throughput,
    ideal_throughput,
    optimize_shares,
)
from paceline.balancer.settings import BalancingPolicy, BalancingSettings
from paceline.balancer.straggler import StragglerConfig, StragglerDetector, StragglerState, StragglerStatus
from paceline.balancer.tracker import FleetTracker, WorkerTracker

__all__ = [
    "BalancingPolicy",
    "BalancingSettings",
    "EstimatorConfig",
    "FleetTracker",
    "Observation",
    "RebalanceDecision",
    "ShareChange",
    "ShareSolution",
    "StepTimeEstimator",
    "StepTimeModel",
    "StragglerConfig",
    "StragglerDetector",
    "StragglerState",
    "StragglerStatus",
    "WorkerTracker",
    "decide_rebalance",
    "equal_split",
    "expected_max_step_time",
    "expected_throughput",
    "ideal_throughput",
    "optimize_shares",
]
