"""Straggler → batch-share policy: per-worker step-time estimates, straggler classification, share
optimisation (minimise E[max_m T_m(b_m)] with Σ b_m = B) and the hysteresis that decides when to apply it.
See docs/balancing.md.
"""

from paceline.balancer.decision import (
    RebalanceDecision,
    ShareChange,
    SwitchValue,
    decide_rebalance,
    switch_value,
)
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
from paceline.balancer.straggler import (
    ChangePoint,
    Side,
    StragglerConfig,
    StragglerDetector,
    StragglerState,
    StragglerStatus,
    cusum_increments,
    cusum_path,
    cusum_threshold,
    residual_sd,
    shift_in_sd,
)
from paceline.balancer.tracker import FleetTracker, Verdict, WorkerTracker

__all__ = [
    "BalancingPolicy",
    "BalancingSettings",
    "ChangePoint",
    "EstimatorConfig",
    "FleetTracker",
    "Observation",
    "RebalanceDecision",
    "ShareChange",
    "ShareSolution",
    "Side",
    "StepTimeEstimator",
    "StepTimeModel",
    "StragglerConfig",
    "StragglerDetector",
    "StragglerState",
    "StragglerStatus",
    "SwitchValue",
    "Verdict",
    "WorkerTracker",
    "cusum_increments",
    "cusum_path",
    "cusum_threshold",
    "decide_rebalance",
    "equal_split",
    "expected_max_step_time",
    "expected_throughput",
    "ideal_throughput",
    "optimize_shares",
    "residual_sd",
    "shift_in_sd",
    "switch_value",
]
