"""Per-worker and fleet-wide tracking: estimator + change-point detector + the evidence it holds.

An observation that moves a worker's CUSUM away from zero is held back from the estimator (the model stays
the pre-change reference while the evidence accumulates). When the sums return to zero the evidence was
noise: the held observations are ingested, each winsorised at ±3 s.d. of its residual (a Huber-type robust
mean: a one-off spike moves the model by at most a 3-sigma observation, while a persistently noisy worker's
slow windows are kept, so its mean and noise are not underestimated). When a sum crosses the threshold a
change point is confirmed: the observations before the estimated onset are ingested (winsorised), the
estimator restarts (`StepTimeEstimator.restart`: the fit is forgotten, the noise statistics kept) and the
observations from the onset on form the new regime's fit.
"""

from __future__ import annotations

import enum
import math
import statistics
from dataclasses import dataclass, field, replace

from paceline.balancer.estimator import (
    EstimatorConfig,
    Observation,
    StepTimeEstimator,
    StepTimeModel,
    cautious_factor,
)
from paceline.balancer.straggler import (
    ChangePoint,
    StragglerConfig,
    StragglerDetector,
    StragglerStatus,
    residual_sd,
    shift_in_sd,
)

STATE_VERSION = 3
NOISE_BAND = 4.0  # a worker's cv² counts as its own only beyond 4x the fleet's
_WINSOR_Z = 3.0


class Verdict(enum.StrEnum):
    """What happened to the observation just seen."""

    ACCEPT = "accept"  # ingested (with any evidence held before it)
    HOLD = "hold"  # held as evidence of a possible change
    CHANGE = "change"  # a change point was confirmed: the estimator restarted at the onset


@dataclass(frozen=True, kw_only=True)
class _Held:
    obs: Observation
    reference_s: float  # the model's prediction when the observation was tested
    sd: float  # log-space s.d. of its residual

    def winsorised(self) -> Observation:
        low = self.reference_s * math.exp(-_WINSOR_Z * self.sd)
        high = self.reference_s * math.exp(_WINSOR_Z * self.sd)
        seconds = min(max(self.obs.seconds, low), high)
        if seconds == self.obs.seconds:
            return self.obs
        return Observation(
            batch=self.obs.batch,
            seconds=seconds,
            steps=self.obs.steps,
            step=self.obs.step,
            timestamp=self.obs.timestamp,
        )


@dataclass(kw_only=True)
class WorkerTracker:
    estimator: StepTimeEstimator
    detector: StragglerDetector
    held: list[_Held] = field(default_factory=list)
    last_seen_step: int | None = None
    last_seen_batch: int | None = None
    last_change: ChangePoint | None = None
    previous_model: StepTimeModel | None = None  # the fit just before the latest change point
    fit_count: int = 0  # observations in the fit since the last restart

    def _ingest(self, obs: Observation) -> None:
        if self.estimator.update(obs, noise=False):
            self.fit_count += 1

    def ready(self, *, steps: int) -> bool:
        """Whether the fit is good enough to test against: its standard error at most a quarter of the
        tuned shift, n ≥ (4/δ)² with δ in noise units (quiet workers: a few windows; cv 0.3: about ten)."""
        cfg = self.detector.config
        if self.fit_count < cfg.min_baseline_observations or self.estimator.dv < cfg.min_noise_terms:
            return False
        cv = math.sqrt(self.estimator.noise_cv2_upper())
        delta = shift_in_sd(
            min_shift=cfg.min_shift, sd=residual_sd(noise_cv=cv, steps=steps, fit_observations=1e9)
        )
        return self.fit_count >= (4.0 / delta) ** 2

    def model(self, *, overhead_fraction: float) -> StepTimeModel | None:
        return self.estimator.model(prior_overhead_s=overhead_fraction * self.estimator.mean_seconds)

    def _flush(self) -> None:
        for held in self.held:
            self._ingest(held.winsorised())
        self.held.clear()
        self.detector.flush()

    def observe(self, obs: Observation, *, overhead_fraction: float) -> Verdict | None:
        """Test and ingest (or hold) one observation; None for a repeated scrape."""
        if self.last_seen_step is not None and obs.step == self.last_seen_step:
            return None
        if self.detector.healthy_since is None:  # healthy from its first observation until a change
            self.detector.healthy_since = obs.timestamp
        batch_changed = self.last_seen_batch is not None and obs.batch != self.last_seen_batch
        self.last_seen_step, self.last_seen_batch = obs.step, obs.batch
        model = self.model(overhead_fraction=overhead_fraction)
        self.estimator.observe_noise(obs)  # the noise follows every window, held or not
        cfg = self.detector.config
        if batch_changed or model is None or not self.ready(steps=obs.steps):
            # the a/c split may be off at a new batch: the first window there is not tested
            self._flush()
            self._ingest(obs)
            return Verdict.ACCEPT
        cv = math.sqrt(self.estimator.noise_cv2_upper())
        change = self.detector.test(
            seconds=obs.seconds,
            steps=obs.steps,
            batch=obs.batch,
            timestamp=obs.timestamp,
            model=model,
            noise_cv=cv,
        )
        sd = residual_sd(noise_cv=cv, steps=obs.steps, fit_observations=model.observations)
        self.held.append(_Held(obs=obs, reference_s=model.mean(obs.batch), sd=sd))
        if change is not None:
            before, after = self.held[: change.onset_index], self.held[change.onset_index :]
            for held in before:
                self._ingest(held.winsorised())
            self.previous_model = self.model(overhead_fraction=overhead_fraction)
            self.estimator.restart()
            self.fit_count = 0
            for held in after:
                self._ingest(held.obs)
            self.held.clear()
            self.last_change = change
            return Verdict.CHANGE
        if self.detector.quiet:
            self._flush()
            return Verdict.ACCEPT
        if len(self.held) > cfg.max_pending:
            self._ingest(self.held.pop(0).winsorised())
            self.detector.drop_oldest()
        return Verdict.HOLD


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
    started_at: float | None = None  # timestamp of the first observation

    def observe(self, worker: str, obs: Observation) -> Verdict | None:
        if self.started_at is None or obs.timestamp < self.started_at:
            self.started_at = obs.timestamp
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
        """Current model of every worker that has data (transient spikes excluded), each with the fleet's
        noise unless its own is distinguishable from it (`pooled_noise`)."""
        fraction = self.pooled_overhead_fraction()
        out: dict[str, StepTimeModel] = {}
        for name, tracker in self.workers.items():
            model = tracker.model(overhead_fraction=fraction)
            if model is not None:
                out[name] = model
        return pooled_noise(out)

    def set_straggler_config(self, config: StragglerConfig) -> None:
        self.straggler_config = config
        for tracker in self.workers.values():
            tracker.detector.config = config

    def regime_started_at(self) -> float | None:
        """When the fleet's current regime began: the latest confirmed onset, else the first observation.
        A worker back at its healthy level resumes its healthy regime: the healthy time before the slowdown
        counts, as if the excursion had not happened (the decision's expected remaining duration is the
        regime's age)."""
        onsets = [
            t.detector.regime_onset
            for t in self.workers.values()
            if t.last_change is not None and t.detector.regime_onset is not None
        ]
        return max(onsets, default=self.started_at)

    def changes_since(self, since: float | None) -> dict[str, ChangePoint]:
        """Workers whose latest change point was detected after `since` (None: any)."""
        return {
            name: t.last_change
            for name, t in self.workers.items()
            if t.last_change is not None and (since is None or t.last_change.detected_at > since)
        }

    def previous_models(self, since: float | None) -> dict[str, StepTimeModel]:
        """Each worker's model of the regime before its change points detected after `since`."""
        out = self.models()
        for name in self.changes_since(since):
            previous = self.workers[name].previous_model
            if previous is not None:
                out[name] = previous
        return out

    def stragglers(self) -> dict[str, StragglerStatus]:
        return {name: tracker.detector.status() for name, tracker in self.workers.items()}


def pooled_noise(models: dict[str, StepTimeModel]) -> dict[str, StepTimeModel]:
    """Replace each worker's noise cv by the fleet's (the median cv²) unless even a cautious lower bound of
    its own, cv² ÷ `cautious_factor(k)` for k terms behind it (about two sigma), is above 4x the fleet's.
    The optimizer gives noisier workers less (it minimises E[max] of the step times): estimates of equal
    noise differ by chance (by 4x in cv² with a few terms), which would move shares for nothing; a
    persistently noisy worker stands out within a few terms and keeps its own. A worker that looks quieter
    than the fleet gets the fleet's noise (low estimates from few terms are the common error, and the
    cautious side)."""
    if len(models) < 2:
        return models
    pool = statistics.median(m.noise_cv**2 for m in models.values())
    out = {}
    for name, model in models.items():
        distinct = model.noise_cv**2 / cautious_factor(model.noise_terms) > NOISE_BAND * pool
        out[name] = model if distinct else replace(model, noise_cv=math.sqrt(pool))
    return out
