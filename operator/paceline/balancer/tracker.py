"""Per-worker and fleet-wide tracking: estimator + straggler detector + quarantine of slow observations.

Observations taken during a slow episode are held back from the estimator. If the episode turns out
transient they are dropped, so a one-off spike never moves the model (and the balancer does not chase it).
If it becomes persistent, the onset is a change point: the worker's estimator restarts from the held
observations alone (the pre-episode data describe another regime; mixing them would fit a line through
contradictory points and inflate the noise), with the pooled overhead prior. The end of a persistent
episode is handled the same way: observations back near the pre-episode reference are held until the
recovery has lasted the persistence time, then the estimator restarts from them (dropped if the worker
slows down again before that).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from paceline.balancer.estimator import EstimatorConfig, Observation, StepTimeEstimator, StepTimeModel
from paceline.balancer.straggler import StragglerConfig, StragglerDetector, StragglerStatus, Verdict

STATE_VERSION = 2


@dataclass(kw_only=True)
class WorkerTracker:
    estimator: StepTimeEstimator
    detector: StragglerDetector
    held: list[Observation] = field(default_factory=list)
    last_seen_step: int | None = None
    last_seen_batch: int | None = None

    def model(self, *, overhead_fraction: float) -> StepTimeModel | None:
        return self.estimator.model(prior_overhead_s=overhead_fraction * self.estimator.mean_seconds)

    def observe(self, obs: Observation, *, overhead_fraction: float) -> Verdict | None:
        """Classify and ingest (or hold) one observation; None for a repeated scrape."""
        if self.last_seen_step is not None and obs.step == self.last_seen_step:
            return None
        batch_changed = self.last_seen_batch is not None and obs.batch != self.last_seen_batch
        self.last_seen_step, self.last_seen_batch = obs.step, obs.batch
        verdict = self.detector.classify(
            batch=obs.batch,
            seconds=obs.seconds,
            timestamp=obs.timestamp,
            live=self.model(overhead_fraction=overhead_fraction),
            live_count=self.estimator.count,
            batch_changed=batch_changed,
        )
        if verdict is Verdict.HOLD:
            self.held.append(obs)
            return verdict
        if verdict is Verdict.RELEASE:  # change point: refit from the new regime's observations only
            self.estimator.restart()
            for held in self.held:
                self.estimator.update(held)
        self.held.clear()
        self.estimator.update(obs)
        return verdict


@dataclass(kw_only=True)
class FleetTracker:
    """All workers of one job. The a/c prior for unidentified workers is pooled from identified ones.

    The pooled quantity is the overhead *fraction* a / T(b̄), weighted by each worker's observation count;
    a fraction transfers between device types better than absolute seconds. With no identified worker
    `default_overhead_fraction` is used (0 means shares proportional to measured speed).
    """

    estimator_config: EstimatorConfig = field(default_factory=EstimatorConfig)
    straggler_config: StragglerConfig = field(default_factory=StragglerConfig)
    default_overhead_fraction: float = 0.0
    workers: dict[str, WorkerTracker] = field(default_factory=dict)

    def observe(self, worker: str, obs: Observation) -> Verdict | None:
        tracker = self.workers.get(worker)
        if tracker is None:
            tracker = WorkerTracker(
                estimator=StepTimeEstimator(config=self.estimator_config),
                detector=StragglerDetector(config=self.straggler_config),
            )
            self.workers[worker] = tracker
        return tracker.observe(obs, overhead_fraction=self.pooled_overhead_fraction())

    def remove(self, worker: str) -> None:
        self.workers.pop(worker, None)

    def pooled_overhead_fraction(self) -> float:
        total_weight, total = 0.0, 0.0
        for tracker in self.workers.values():
            if not tracker.estimator.is_identified():
                continue
            model = tracker.model(overhead_fraction=self.default_overhead_fraction)
            if model is None:
                continue
            level = model.mean(tracker.estimator.mean_batch)
            total += model.observations * model.overhead_s / level
            total_weight += model.observations
        return total / total_weight if total_weight > 0 else self.default_overhead_fraction

    def models(self) -> dict[str, StepTimeModel]:
        """Current model of every worker that has data (transient spikes excluded)."""
        fraction = self.pooled_overhead_fraction()
        out: dict[str, StepTimeModel] = {}
        for name, tracker in self.workers.items():
            model = tracker.model(overhead_fraction=fraction)
            if model is not None:
                out[name] = model
        return out

    def stragglers(self) -> dict[str, StragglerStatus]:
        return {name: tracker.detector.status() for name, tracker in self.workers.items()}
