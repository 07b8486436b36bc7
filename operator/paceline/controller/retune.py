"""Asynchronous jobs: measured staleness → implicit momentum → the explicit momentum the shards run with
(pure; the caller reads the shards' staleness logs and PUTs the result, see `paceline.adapters.workers`).

Each pass reads every parameter-server shard's new updates (`GET /staleness?after=N`, exact τ per update),
feeds them to the job's `MomentumController` together with the workers' measured speeds, and hands back the
versioned explicit momentum every shard should hold — a new version when the policy retunes, else the one in
force (level-based: a shard that restarted or missed a PUT gets it again on the next pass).

The state survives an operator restart: `persisted` is written to `status.asynchronous.momentumState` (JSON)
and `restore` reads it back — the estimate, the versions, and the read positions taken at the same moment,
so no τ value is counted twice or skipped. `count_dropped` keeps the job's total of updates the shards
dropped for staleness across shard restarts (each incarnation's counter starts at 0).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from paceline.momentum import MomentumController, MomentumDecision, MomentumSettings

STATE_FORMAT = 1


@dataclass(kw_only=True)
class AsyncControl:
    """Per-job memory: the controller, how far each shard's update log was read, the version in force."""

    controller: MomentumController
    explicit: float  # the explicit momentum in force (0.0 is a value like any other)
    cursors: dict[str, int] = field(default_factory=dict)  # shard incarnation (pod uid) → next index to read
    attempt: str = "0"  # the shards' update logs restart with every attempt
    version: int = 1  # hyperparameters version the PS shards started with (PACELINE_HYPERPARAMETERS)
    status: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # running shard incarnation → its dropped counter
    dropped_before: int = 0  # dropped by incarnations that are gone
    saved_at: float | None = None  # when `persisted` last went into the status (monotonic; not persisted)
    curvature_seen: dict[str, float] = field(default_factory=dict)  # worker → its curvature gauge as last fed

    @staticmethod
    def create(*, settings: MomentumSettings, workers: int, initial_explicit: float) -> AsyncControl:
        """State for a job whose shards start with `initial_explicit` momentum."""
        controller = MomentumController.create(settings=settings, workers=workers)
        controller.current_explicit = initial_explicit
        return AsyncControl(controller=controller, explicit=initial_explicit)

    @property
    def dropped_total(self) -> int:
        return self.dropped_before + sum(self.dropped.values())


def count_dropped(state: AsyncControl, counters: Mapping[str, int | None], running: Collection[str]) -> None:
    """Shard incarnation → its dropped-updates counter (None: not read this time, the last value stands);
    incarnations no longer `running` are folded into the total of the gone ones."""
    for incarnation in [i for i in state.dropped if i not in running]:
        state.dropped_before += state.dropped.pop(incarnation)
    for incarnation, value in counters.items():
        if value is not None and incarnation in running:
            state.dropped[incarnation] = max(value, state.dropped.get(incarnation, 0))


def persisted(state: AsyncControl) -> str:
    """The state an operator restart resumes from, as compact JSON (`status.asynchronous.momentumState`)."""
    controller = state.controller
    doc = {
        "format": STATE_FORMAT,
        "attempt": state.attempt,
        "version": state.version,
        "explicit": state.explicit,
        "cursors": dict(sorted(state.cursors.items())),
        "dropped": dict(sorted(state.dropped.items())),
        "droppedBefore": state.dropped_before,
        "estimator": controller.estimator.to_dict(),
        "members": sorted(controller.members),
        "speeds": dict(sorted(controller.speeds.items())),
        "curvature": controller.curvature.value,
        "curvatureSeen": dict(sorted(state.curvature_seen.items())),
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def restore(
    text: str, *, settings: MomentumSettings, workers: int, initial_explicit: float
) -> AsyncControl | None:
    """The state `persisted` wrote, or None when `text` is not one (then start from the prior). An estimate
    for another worker count is dropped (the prior for `workers` instead); versions and positions stay."""
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            return None
        state = AsyncControl.create(settings=settings, workers=workers, initial_explicit=initial_explicit)
        state.attempt = str(doc["attempt"])
        state.version = int(doc["version"])
        state.explicit = float(doc["explicit"])
        state.cursors = {str(k): int(v) for k, v in dict(doc["cursors"]).items()}
        state.dropped = {str(k): int(v) for k, v in dict(doc["dropped"]).items()}
        state.dropped_before = int(doc["droppedBefore"])
        controller = state.controller
        controller.estimator.restore(dict(doc["estimator"]))
        controller.current_explicit = state.explicit
        controller.members = {str(m) for m in doc["members"]}
        controller.speeds = {str(k): float(v) for k, v in dict(doc["speeds"]).items()}
        curvature = doc.get("curvature")
        controller.curvature.value = float(curvature) if curvature is not None else None
        state.curvature_seen = {str(k): float(v) for k, v in dict(doc.get("curvatureSeen", {})).items()}
    except (ValueError, TypeError, KeyError):
        return None
    numbers = [state.explicit, *controller.speeds.values(), controller.curvature.value or 0.0]
    if state.version < 1 or not all(math.isfinite(x) for x in numbers):
        return None
    return state


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
    curvature: Mapping[str, float] | None = None,
) -> Retune | None:
    """Feed the shards' new τ values (incarnation → (values, next index)) and the workers' new curvature
    estimates (worker → its gauge), decide; None without worker speeds. `workers` is the worker set
    (default: those with a speed): one missed scrape is not a change of the worker set.

    A worker's gauge holds its latest estimate until the next one (every PACELINE_CURVATURE_EVERY steps,
    many scrapes later): only a value that differs from the one last fed for that worker is a new estimate,
    so each estimate counts once in the curvature mean, however often it is scraped."""
    for incarnation, (values, after) in staleness.items():
        state.cursors[incarnation] = after
        state.controller.observe_staleness(values)
    gauges = dict(curvature or {})
    state.controller.observe_curvature(v for w, v in gauges.items() if state.curvature_seen.get(w) != v)
    state.curvature_seen.update(gauges)
    if not worker_speeds:
        return None
    decision = state.controller.decide(worker_speeds=worker_speeds, workers=workers)
    state.status = decision.to_status()
    if not decision.apply:
        return Retune(version=state.version, momentum=state.explicit, applied=None)
    state.version += 1
    state.explicit = decision.explicit
    return Retune(version=state.version, momentum=decision.explicit, applied=decision)
