"""Online per-worker step-time model T(b) = a + c·b with exponential forgetting.

The estimator keeps exponentially decayed sufficient statistics of (b, t) pairs and solves a 2×2
weighted least-squares problem with a prior on the overhead ``a`` (mean a0, s.d. a fraction of the step
time), entered as a pseudo-observation at b = 0. When b has varied the data decide the a/c split; when b
has been constant the fit keeps ``a + c·b̄ = t̄`` exactly and takes ``a = a0`` from the prior (the fleet
passes a pooled estimate), so ``c`` is still tracked.

The noise (coefficient of variation of one step's time) is estimated separately from successive
differences of window means at the same batch, each clipped at 3 standard deviations of the current
estimate (a Huber-type robust scale estimate): a level shift within the forgetting window moves the mean
fit but adds at most one clipped term to the noise, instead of a residual spread that lasts a half-life.
`restart()` forgets the mean fit at a change point (the tracker calls it when a worker's regime changes)
and keeps the noise statistics, which are relative and were never fed a difference across the change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

STATE_VERSION = 2
_NOISE_CLIP_Z = 3.0  # successive differences beyond 3 s.d. of the current noise estimate are clipped


@dataclass(frozen=True, kw_only=True)
class Observation:
    """One scrape of one worker's metrics."""

    batch: int  # per-worker batch size b during the window
    seconds: float  # mean compute seconds per step over the window
    steps: int = 1  # number of steps that `seconds` averages over
    step: int  # cumulative step counter at the scrape (repeated values are ignored)
    timestamp: float  # seconds, same clock for all observations of a worker

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise ValueError(f"seconds must be a positive finite number, got {self.seconds}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def cautious_factor(terms: float) -> float:
    """1 + 2·√(2/(1 + k)) for a cv² estimate with k terms behind it: about a two-sigma upper bound of a
    chi-square estimate (1.2x with 200 terms, 2.2x with 5)."""
    return 1.0 + 2.0 * math.sqrt(2.0 / (1.0 + max(terms, 0.0)))


def chi_square_quantile(dof: float, z: float) -> float:
    """The quantile of χ²(dof) at the standard normal quantile z (Wilson–Hilferty; floored above zero for
    very few degrees of freedom)."""
    root = 1.0 - 2.0 / (9.0 * dof) + z * math.sqrt(2.0 / (9.0 * dof))
    return dof * max(root, 0.05) ** 3


def upper_noise_factor(terms: float) -> float:
    """k ÷ the 2.5 % quantile of χ²(k), k = 1 + terms (the prior counts as one): how far a cv² estimated
    from k terms may lie below the true one (about 80x at k = 2, 6x at 5, 2x at 25)."""
    k = 1.0 + max(terms, 0.0)
    return k / chi_square_quantile(k, -1.96)


@dataclass(frozen=True, kw_only=True)
class StepTimeModel:
    """T(b) ~ Normal(a + c·b, (cv·(a + c·b))²) for one worker."""

    overhead_s: float  # a
    per_sample_s: float  # c (> 0)
    noise_cv: float = 0.0  # coefficient of variation of one step's time
    observations: float = 0.0  # decayed number of observations behind the fit
    steps: float = 0.0  # decayed number of steps behind the fit (0: unknown)
    noise_terms: float = 0.0  # decayed number of successive differences behind noise_cv
    identified: bool = False  # True when b varied enough for the data to split a and c

    def mean(self, batch: float) -> float:
        return self.overhead_s + self.per_sample_s * batch

    def std(self, batch: float) -> float:
        return self.noise_cv * self.mean(batch)

    def variance(self, batch: float) -> float:
        return self.std(batch) ** 2

    def samples_per_second(self, batch: float) -> float:
        return batch / self.mean(batch)

    def relative_standard_error(self) -> float:
        """Standard error of the fitted level, relative to it: cv/√steps with cv² at the upper end of its
        95 % interval (`upper_noise_factor`; a cv² from a few terms may be far too low); 0 when the steps
        are unknown."""
        if self.steps <= 0:
            return 0.0
        return self.noise_cv * math.sqrt(upper_noise_factor(self.noise_terms) / self.steps)


@dataclass(frozen=True, kw_only=True)
class EstimatorConfig:
    """Forgetting and prior settings; exactly one half-life must be set."""

    half_life_s: float | None = 30.0
    half_life_observations: float | None = None
    prior_overhead_sd_fraction: float = 0.2  # prior s.d. of the overhead a, as a fraction of step time
    default_noise_cv: float = 0.05  # prior coefficient of variation, worth one observation
    min_relative_spread: float = 0.05  # weighted std(b)/mean(b) needed to call a fit identified
    noise_half_life_factor: float = 10.0  # the noise (relative, slow to change) forgets this much slower

    def __post_init__(self) -> None:
        if (self.half_life_s is None) == (self.half_life_observations is None):
            raise ValueError("set exactly one of half_life_s and half_life_observations")
        half_life = self.half_life_s if self.half_life_s is not None else self.half_life_observations
        if half_life is None or not half_life > 0:
            raise ValueError(f"half-life must be > 0, got {half_life}")
        if self.prior_overhead_sd_fraction <= 0 or self.default_noise_cv < 0 or self.min_relative_spread < 0:
            raise ValueError(
                "prior_overhead_sd_fraction must be > 0; default_noise_cv, min_relative_spread >= 0"
            )


_STAT_NAMES = ("w", "sb", "st", "sbb", "sbt", "d")  # the mean fit's sums; `restart` clears them
_NOISE_NAMES = ("sv", "dv")  # the noise estimate's sums; kept across a restart


@dataclass(kw_only=True)
class StepTimeEstimator:
    """Exponentially forgetting estimator of one worker's T(b) = a + c·b and its noise."""

    config: EstimatorConfig = field(default_factory=EstimatorConfig)
    # decayed sums; weights are steps × decay, `d` counts observations × decay
    w: float = 0.0
    sb: float = 0.0
    st: float = 0.0
    sbb: float = 0.0
    sbt: float = 0.0
    d: float = 0.0
    # decayed sum of clipped squared relative successive differences (each estimates cv²) and their count
    sv: float = 0.0
    dv: float = 0.0
    count: int = 0  # observations ingested, never decayed (a restart keeps it)
    last_step: int | None = None
    last_timestamp: float | None = None
    last_batch: int | None = None
    last_seconds: float | None = None  # the previous window mean (None: no difference with the next one)
    last_steps: int | None = None
    noise_previous: tuple[int, float, int] | None = None  # (batch, seconds, steps) for `observe_noise`
    noise_timestamp: float | None = None

    def _decay_factor(self, timestamp: float) -> float:
        cfg = self.config
        if cfg.half_life_observations is not None:
            return 0.5 ** (1.0 / cfg.half_life_observations)
        if self.last_timestamp is None or cfg.half_life_s is None:
            return 1.0
        elapsed = max(0.0, timestamp - self.last_timestamp)
        return 0.5 ** (elapsed / cfg.half_life_s)

    def is_duplicate(self, obs: Observation) -> bool:
        """True when the scrape shows no new step since the last ingested one."""
        return self.last_step is not None and obs.step == self.last_step

    def observe_noise(self, obs: Observation) -> None:
        """Feed the noise estimate alone, as observations arrive (the tracker calls this for every window,
        including those it holds back from the mean fit, and then `update(obs, noise=False)`)."""
        if self.noise_timestamp is not None:
            self._decay_noise(self.noise_timestamp, obs.timestamp)
        prev = self.noise_previous
        if prev is not None and prev[0] == obs.batch:
            self._add_difference(prev[1], prev[2], obs.seconds, obs.steps)
        self.noise_previous = (obs.batch, obs.seconds, obs.steps)
        if self.noise_timestamp is None or obs.timestamp > self.noise_timestamp:
            self.noise_timestamp = obs.timestamp

    def _decay_noise(self, last: float | None, timestamp: float) -> None:
        cfg = self.config
        factor = cfg.noise_half_life_factor
        if cfg.half_life_observations is not None:
            k = 0.5 ** (1.0 / (cfg.half_life_observations * factor))
        elif last is None or cfg.half_life_s is None:
            k = 1.0
        else:
            k = 0.5 ** (max(0.0, timestamp - last) / (cfg.half_life_s * factor))
        for name in _NOISE_NAMES:
            setattr(self, name, getattr(self, name) * k)

    def update(self, obs: Observation, *, noise: bool = True) -> bool:
        """Ingest one observation; returns False when it was a duplicate scrape and was skipped.

        `noise=False`: the mean fit only (the noise was fed by `observe_noise`)."""
        if self.is_duplicate(obs):
            return False
        k = self._decay_factor(obs.timestamp)
        for name in _STAT_NAMES:
            setattr(self, name, getattr(self, name) * k)
        if noise:
            self._decay_noise(self.last_timestamp, obs.timestamp)
        n, b, t = float(obs.steps), float(obs.batch), obs.seconds
        self.w += n
        self.sb += n * b
        self.st += n * t
        self.sbb += n * b * b
        self.sbt += n * b * t
        self.d += 1.0
        if (
            noise
            and self.last_seconds is not None
            and self.last_steps is not None
            and obs.batch == self.last_batch
        ):
            self._add_difference(self.last_seconds, self.last_steps, t, obs.steps)
        self.count += 1
        self.last_step = obs.step
        self.last_batch = obs.batch
        self.last_seconds, self.last_steps = t, obs.steps
        if self.last_timestamp is None or obs.timestamp > self.last_timestamp:
            self.last_timestamp = obs.timestamp
        return True

    def _add_difference(self, t0: float, n0: int, t1: float, n1: int) -> None:
        """One successive difference of window means at the same batch → one clipped estimate of cv².

        With per-step times of s.d. cv·μ, Var(t1 − t0) = (cv·μ)²·(1/n0 + 1/n1); dividing by the pair's mean
        and by (1/n0 + 1/n1) gives an unbiased estimate of cv². Terms beyond `_NOISE_CLIP_Z`² × the current
        estimate are clipped (for Gaussian noise that lowers the expectation by 0.5 %), so a level shift
        between the two windows counts as at most one 3-sigma difference.
        """
        mean = 0.5 * (t0 + t1)
        sample = ((t1 - t0) / mean) ** 2 / (1.0 / n0 + 1.0 / n1)
        current = self.noise_cv2()
        if current > 0.0:
            sample = min(sample, _NOISE_CLIP_Z * _NOISE_CLIP_Z * current)
        self.sv += sample
        self.dv += 1.0

    def noise_cv2(self) -> float:
        """Squared noise cv: the clipped successive differences, blended with the prior cv (weight 1)."""
        return (self.config.default_noise_cv**2 + self.sv) / (1.0 + self.dv)

    def noise_cv2_upper(self) -> float:
        """A cautious cv² for tests of change: the estimate × `cautious_factor`."""
        return self.noise_cv2() * cautious_factor(self.dv)

    def restart(self) -> None:
        """Change point: forget the mean fit (a, c) but keep the noise statistics and the counters.

        The next observation starts the fit afresh and forms no successive difference with the previous
        one (they belong to different regimes).
        """
        for name in _STAT_NAMES:
            setattr(self, name, 0.0)
        self.last_seconds = None
        self.last_steps = None

    @property
    def mean_batch(self) -> float:
        return self.sb / self.w if self.w > 0 else 0.0

    @property
    def mean_seconds(self) -> float:
        return self.st / self.w if self.w > 0 else 0.0

    def relative_batch_spread(self) -> float:
        """Weighted std(b)/mean(b) over the forgetting window."""
        if self.w <= 0:
            return 0.0
        mb = self.mean_batch
        var = max(0.0, self.sbb / self.w - mb * mb)
        return math.sqrt(var) / mb if mb > 0 else 0.0

    def is_identified(self) -> bool:
        return self.count >= 2 and self.relative_batch_spread() >= self.config.min_relative_spread

    def _solve(self, lam: float, a0: float) -> tuple[float, float]:
        """Minimise Σw(t − a − c·b)² + λ(a − a0)², keeping a >= 0 and c > 0."""
        mb, mt = self.mean_batch, self.mean_seconds
        m11, m12, m22 = self.w + lam, self.sb, self.sbb
        r1, r2 = self.st + lam * a0, self.sbt
        det = m11 * m22 - m12 * m12
        if det > 1e-12 * m11 * m22:
            a = (r1 * m22 - m12 * r2) / det
            c = (m11 * r2 - m12 * r1) / det
        else:
            a, c = a0, (mt - a0) / mb
        if a < 0.0:  # refit through the origin
            a, c = 0.0, self.sbt / self.sbb
        c_min = 1e-3 * mt / mb
        if c < c_min:
            c = c_min
            a = max(0.0, mt - c * mb)
        return a, c

    def model(self, *, prior_overhead_s: float = 0.0) -> StepTimeModel | None:
        """Current fit, or None before the first observation (or right after a restart).

        `prior_overhead_s` is a0, the prior mean of the overhead; its prior s.d. is
        `prior_overhead_sd_fraction` × mean step time. The prior enters as a pseudo-observation at b = 0
        whose weight σ²/σ_a² uses the per-step noise σ = cv·t̄ (robust estimate, see `noise_cv2`); with
        weights of one per step, the data dominate as soon as b has varied.
        """
        if self.w <= 0:
            return None
        mt = self.mean_seconds
        a0 = min(max(prior_overhead_s, 0.0), mt)
        identified = self.is_identified()
        cv2 = self.noise_cv2()
        lam = max(cv2 / self.config.prior_overhead_sd_fraction**2, 1e-9 * self.w)
        a, c = self._solve(lam, a0)
        return StepTimeModel(
            overhead_s=a,
            per_sample_s=c,
            noise_cv=math.sqrt(cv2),
            observations=self.d,
            steps=self.w,
            noise_terms=self.dv,
            identified=identified,
        )
