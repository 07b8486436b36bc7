"""Implicit momentum of asynchronous SGD from measured staleness (Mitliagkas et al., 2016).

With geometric staleness P(τ = l) = (1 − μ)·μ^l, asynchronous SGD behaves like momentum SGD with
momentum μ. E[τ] = μ/(1 − μ), so μ = E[τ]/(1 + E[τ]) (also the maximum-likelihood estimate).
For M workers with exponentially distributed step times μ = 1 − 1/M (E[τ] = M − 1): the prior.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

STATE_VERSION = 2
HISTOGRAM_BUCKETS = 49  # τ = 0 .. 47 exactly, the last bucket holds τ >= 48


def theory_momentum(workers: int) -> float:
    """μ = 1 − 1/M for M asynchronous workers with exponential step times."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return 1.0 - 1.0 / workers


def momentum_from_staleness(mean_staleness: float) -> float:
    """μ = E[τ]/(1 + E[τ]) under the geometric staleness model."""
    if mean_staleness < 0:
        raise ValueError(f"mean staleness must be >= 0, got {mean_staleness}")
    return mean_staleness / (1.0 + mean_staleness)


@dataclass(frozen=True, kw_only=True)
class MomentumEstimate:
    implicit: float  # μ_implicit
    mean_staleness: float  # E[τ] behind it (prior blended in)
    effective_samples: float  # Kish effective sample size of the forgetting window
    theory: float  # 1 − 1/M prior
    workers: int
    delays: tuple[float, ...] = (1.0,)  # P(τ = l), l = 0.., prior blended in (last bucket: the tail)


def geometric_delays(mean: float, buckets: int = HISTOGRAM_BUCKETS) -> list[float]:
    """P(τ = l) of geometric staleness with mean `mean`, the tail folded into the last bucket."""
    mu = momentum_from_staleness(mean)
    head = [(1.0 - mu) * mu**lag for lag in range(buckets - 1)]
    return [*head, max(1.0 - sum(head), 0.0)]


@dataclass(kw_only=True)
class StalenessEstimator:
    """Exponentially forgetting mean of τ, blended with the 1 − 1/M prior.

    The prior is `prior_samples` pseudo-samples of E[τ] = M − 1 placed at the start (or at the last
    reset) and forgotten at the same rate as real samples, so it only matters until data arrive.
    """

    half_life_updates: float = 200.0
    workers: int = 1
    prior_samples: float = 20.0
    weight: float = 0.0  # Σ w
    weighted_sum: float = 0.0  # Σ w·τ
    weight_sq: float = 0.0  # Σ w²
    prior_weight: float | None = None  # current weight of the prior pseudo-samples (None: prior_samples)
    count: int = 0  # samples seen, never decayed
    histogram: list[float] = field(default_factory=list)  # forgetting weight per τ bucket

    def __post_init__(self) -> None:
        if self.half_life_updates <= 0 or self.prior_samples < 0 or self.workers < 1:
            raise ValueError("need half_life_updates > 0, prior_samples >= 0, workers >= 1")
        if self.prior_weight is None:
            self.prior_weight = self.prior_samples

    @property
    def decay(self) -> float:
        return 0.5 ** (1.0 / self.half_life_updates)

    def observe(self, staleness: int) -> None:
        if staleness < 0:
            raise ValueError(f"staleness must be >= 0, got {staleness}")
        k = self.decay
        self.weight = self.weight * k + 1.0
        self.weighted_sum = self.weighted_sum * k + float(staleness)
        self.weight_sq = self.weight_sq * k * k + 1.0
        self.prior_weight = (self.prior_weight or 0.0) * k
        self.count += 1
        if len(self.histogram) < HISTOGRAM_BUCKETS:
            self.histogram.extend([0.0] * (HISTOGRAM_BUCKETS - len(self.histogram)))
        for bucket in range(HISTOGRAM_BUCKETS):
            self.histogram[bucket] *= k
        self.histogram[min(staleness, HISTOGRAM_BUCKETS - 1)] += 1.0

    def observe_many(self, values: Iterable[int]) -> None:
        """The same as `observe` for each value in order, with the histogram decayed once per batch."""
        batch = list(values)
        if not batch:
            return
        if min(batch) < 0:
            raise ValueError(f"staleness must be >= 0, got {min(batch)}")
        k, n = self.decay, len(batch)
        if len(self.histogram) < HISTOGRAM_BUCKETS:
            self.histogram.extend([0.0] * (HISTOGRAM_BUCKETS - len(self.histogram)))
        kn = k**n
        self.histogram = [w * kn for w in self.histogram]
        for position, value in enumerate(batch):
            self.histogram[min(value, HISTOGRAM_BUCKETS - 1)] += k ** (n - 1 - position)
            self.weight = self.weight * k + 1.0
            self.weighted_sum = self.weighted_sum * k + float(value)
            self.weight_sq = self.weight_sq * k * k + 1.0
        self.prior_weight = (self.prior_weight or 0.0) * kn
        self.count += n

    def effective_samples(self) -> float:
        return self.weight * self.weight / self.weight_sq if self.weight_sq > 0 else 0.0

    def estimate(self) -> MomentumEstimate:
        prior_mean = float(self.workers - 1)
        prior_weight = self.prior_weight or 0.0
        denominator = self.weight + prior_weight
        if denominator > 0:
            mean = (self.weighted_sum + prior_weight * prior_mean) / denominator
        else:  # no data and no prior weight
            mean = prior_mean
        prior = geometric_delays(prior_mean)
        measured = self.histogram or [0.0] * HISTOGRAM_BUCKETS
        blended = [w + prior_weight * p for w, p in zip(measured, prior, strict=True)]
        total = sum(blended)
        delays = tuple(w / total for w in blended) if total > 0 else tuple(prior)
        while len(delays) > 1 and delays[-1] <= 0.0:
            delays = delays[:-1]
        return MomentumEstimate(
            implicit=momentum_from_staleness(mean),
            mean_staleness=mean,
            effective_samples=self.effective_samples(),
            theory=theory_momentum(self.workers),
            workers=self.workers,
            delays=delays,
        )

    def reset(self, *, workers: int) -> None:
        """Forget everything (the worker set changed): back to the 1 − 1/M prior for the new M."""
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.weight = self.weighted_sum = self.weight_sq = 0.0
        self.prior_weight = self.prior_samples
        self.histogram = []

    def shrink(self, factor: float) -> None:
        """Down-weight the measured history by `factor` (a worker's speed changed): new samples dominate."""
        if not 0.0 <= factor <= 1.0:
            raise ValueError(f"factor must be in [0, 1], got {factor}")
        self.weight *= factor
        self.weighted_sum *= factor
        self.weight_sq *= factor * factor
        self.histogram = [w * factor for w in self.histogram]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state, to persist in the job's control object (survives operator restarts)."""
        return {
            "v": STATE_VERSION,
            "workers": self.workers,
            "weight": self.weight,
            "weightedSum": self.weighted_sum,
            "weightSq": self.weight_sq,
            "priorWeight": self.prior_weight,
            "count": self.count,
            "histogram": [round(w, 6) for w in self.histogram],
        }

    def restore(self, state: Mapping[str, Any]) -> bool:
        """Load `to_dict` output (same worker count and format only); False when it does not apply."""
        try:
            if int(state["v"]) != STATE_VERSION or int(state["workers"]) != self.workers:
                return False
            histogram = [float(w) for w in state["histogram"]]
            values = (float(state["weight"]), float(state["weightedSum"]), float(state["weightSq"]))
            prior, count = float(state["priorWeight"]), int(state["count"])
        except (KeyError, TypeError, ValueError):
            return False
        if len(histogram) > HISTOGRAM_BUCKETS or min([*values, prior, *histogram], default=0.0) < 0:
            return False
        self.weight, self.weighted_sum, self.weight_sq = values
        self.prior_weight, self.count, self.histogram = prior, count, histogram
        return True
