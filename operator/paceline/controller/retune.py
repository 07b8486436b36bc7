"""Asynchronous jobs: measured staleness → implicit momentum → the explicit momentum the shards run with
(pure; the caller reads the shards' staleness logs and PUTs the result, see `paceline.adapters.workers`).

Each pass reads every parameter-server shard's new updates (`GET /staleness?after=N`, exact τ per update),
feeds them to the job's `MomentumController` together with the workers' measured speeds, and hands back the
versioned explicit momentum every shard should hold — a new version when the policy retunes, else the one in
force (level-based: a shard that restarted or missed a PUT gets it again on the next pass).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from paceline.momentum import MomentumController, MomentumDecision, MomentumSettings


@dataclass(kw_only=True)
class AsyncControl:
    """Per-job memory: the controller, how far each shard's update log was read, the version in force."""

    controller: MomentumController
    explicit: float  # the explicit momentum in force (0.0 is a value like any other)
    cursors: dict[str, int] = field(default_factory=dict)  # shard incarnation (pod uid) → next index to read
    attempt: str = "0"  # the shards' update logs restart with every attempt
    version: int = 1  # hyperparameters version the PS shards started with (PACELINE_HYPERPARAMETERS)
    status: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def create(*, settings: MomentumSettings, workers: int, initial_explicit: float) -> AsyncControl:
        """State for a job whose shards start with `initial_explicit` momentum."""
        controller = MomentumController.create(settings=settings, workers=workers)
        controller.current_explicit = initial_explicit
        return AsyncControl(controller=controller, explicit=initial_explicit)


@dataclass(frozen=True, kw_only=True)
class Retune:
    """What one pass decided: the momentum every shard should hold, and the decision when it changed."""

    version: int
    momentum: float
    applied: MomentumDecision | None


def retune_step(
    state: AsyncControl,
    *,
    staleness: Mapping[str, tuple[list[int], int]],
    worker_speeds: Mapping[str, float],
    workers: Collection[str] | None = None,
    curvature: Iterable[float] = (),
) -> Retune | None:
    """Feed the shards' new τ values (incarnation → (values, next index)) and the workers' curvature
    estimates, decide; None without worker speeds. `workers` is the worker set (default: those with a
    speed): one missed scrape is not a change of the worker set."""
    for incarnation, (values, after) in staleness.items():
        state.cursors[incarnation] = after
        state.controller.observe_staleness(values)
    state.controller.observe_curvature(curvature)
    if not worker_speeds:
        return None
    decision = state.controller.decide(worker_speeds=worker_speeds, workers=workers)
    state.status = decision.to_status()
    if not decision.apply:
        return Retune(version=state.version, momentum=state.explicit, applied=None)
    state.version += 1
    state.explicit = decision.explicit
    return Retune(version=state.version, momentum=decision.explicit, applied=decision)
