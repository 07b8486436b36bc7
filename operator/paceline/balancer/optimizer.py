"""Integer batch shares minimising the expected synchronous step time E[max_m T_m(b_m)].

T_m(b) ~ Normal(a_m + c_m·b, (cv_m·(a_m + c_m·b))²), independent across workers. Algorithm:
1. water-filling: the continuous b that equalises a_m + c_m·b_m within [min_m, max_m] with Σ b = B;
2. largest-remainder rounding to integers (Σ b = B exactly);
3. pattern search: move s samples from one worker to another (s halves from a few samples down to 1),
   evaluating E[max] for the most promising donor/receiver pairs at once on a shared grid
   (E[max] = lo + ∫_lo^hi (1 − Π_m Φ((t − μ_m)/σ_m)) dt, trapezoid rule, numpy-vectorised);
4. the equal split is also scored, and the best candidate is returned (never worse than equal split).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from paceline.balancer.estimator import StepTimeModel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_TAIL_Z = 7.0  # grid covers μ ± 7σ; Φ(−7) ≈ 1.3e-12
_SEARCH_GRID = 128
_REPORT_GRID = 256
_CANDIDATES = 8  # donors × receivers evaluated per search step
_GOLDEN_STEPS = 5


@dataclass(frozen=True, kw_only=True)
class ShareSolution:
    shares: tuple[int, ...]
    expected_step_s: float  # E[max_m T_m(b_m)]
    deterministic_step_s: float  # max_m (a_m + c_m·b_m)


# Chebyshev fit of log(erfc(x)·exp(x²)/t), t = 1/(1 + x/2): relative error < 1.2e-7 (Numerical Recipes)
_ERFC_COEFFS = (
    0.17087277,
    -0.82215223,
    1.48851587,
    -1.13520398,
    0.27886807,
    -0.18628806,
    0.09678418,
    0.37409196,
    1.00002368,
    -1.26551223,
)


def log_normal_cdf(z: FloatArray) -> FloatArray:
    """log Φ(z), accurate to ~1e-7 relative in Φ and without underflow in the lower tail."""
    x = np.abs(z) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.5 * x)
    poly = np.zeros_like(t)
    for coef in _ERFC_COEFFS:  # Horner, highest degree first
        poly = poly * t + coef
    log_half_erfc = np.log(0.5 * t) - x * x + poly  # log(erfc(x)/2) = log Φ(−|z|)
    upper = np.log1p(-np.exp(np.minimum(log_half_erfc, -1e-300)))
    return np.where(z < 0, log_half_erfc, upper)


_TABLE_Z = 9.0
_TABLE_N = 4096


def _build_table() -> FloatArray:
    return log_normal_cdf(np.linspace(-_TABLE_Z, _TABLE_Z, _TABLE_N + 1))


_LOG_CDF_TABLE = _build_table()
_LOG_CDF_SLOPE = np.diff(_LOG_CDF_TABLE)


def _fast_log_cdf(z: FloatArray) -> FloatArray:
    """log Φ by linear interpolation in a table (abs. error < 3e-6); clamped to the table's range."""
    u = (np.clip(z, -_TABLE_Z, _TABLE_Z) + _TABLE_Z) * (_TABLE_N / (2 * _TABLE_Z))
    i = np.minimum(u.astype(np.intp), _TABLE_N - 1)
    return np.asarray(_LOG_CDF_TABLE[i] + _LOG_CDF_SLOPE[i] * (u - i), dtype=np.float64)


def _arrays(models: Sequence[StepTimeModel]) -> tuple[FloatArray, FloatArray, FloatArray]:
    a = np.array([m.overhead_s for m in models], dtype=np.float64)
    c = np.array([m.per_sample_s for m in models], dtype=np.float64)
    cv = np.array([m.noise_cv for m in models], dtype=np.float64)
    if np.any(c <= 0) or np.any(a < 0) or np.any(cv < 0):
        raise ValueError("models need per_sample_s > 0, overhead_s >= 0, noise_cv >= 0")
    return a, c, cv


def _moments(a: FloatArray, c: FloatArray, cv: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
    mu = a + c * b
    floor = 1e-9 * float(np.max(mu))
    return mu, np.maximum(cv * mu, floor)


def _expected_max_on_grid(grid: FloatArray, log_cdf_sum: FloatArray) -> FloatArray:
    """lo + ∫(1 − Π Φ) over the last axis of `log_cdf_sum` (trapezoid on `grid`)."""
    integrand = 1.0 - np.exp(log_cdf_sum)
    dt = grid[1] - grid[0]
    area = dt * (integrand.sum(axis=-1) - 0.5 * (integrand[..., 0] + integrand[..., -1]))
    return np.asarray(grid[0] + area, dtype=np.float64)


def _grid(
    mu_low: FloatArray, sd_low: FloatArray, mu_high: FloatArray, sd_high: FloatArray, n: int
) -> FloatArray:
    lo = float(np.max(mu_low - _TAIL_Z * sd_low))
    hi = float(np.max(mu_high + _TAIL_Z * sd_high))
    return np.linspace(lo, max(hi, lo * (1 + 1e-12) + 1e-12), n)


def expected_max_step_time(*, models: Sequence[StepTimeModel], shares: Sequence[int]) -> float:
    """E[max_m T_m(b_m)] for independent normal step times."""
    if len(models) != len(shares) or not models:
        raise ValueError("need one share per model and at least one worker")
    a, c, cv = _arrays(models)
    mu, sd = _moments(a, c, cv, np.asarray(shares, dtype=np.float64))
    if float(np.max(cv)) == 0.0:
        return float(np.max(mu))
    return _score(mu, sd, _REPORT_GRID)


def _score(mu: FloatArray, sd: FloatArray, points: int) -> float:
    grid = _grid(mu, sd, mu, sd, points)
    log_cdf = _fast_log_cdf((grid[None, :] - mu[:, None]) / sd[:, None]).sum(axis=0)
    return float(_expected_max_on_grid(grid, log_cdf))


def _bounds(
    n: int, min_batch: int | Sequence[int], max_batch: Sequence[int | None] | None, total: int
) -> tuple[IntArray, IntArray]:
    lo = (
        np.full(n, min_batch, dtype=np.int64)
        if isinstance(min_batch, int)
        else np.asarray(min_batch, np.int64)
    )
    hi = np.full(n, total, dtype=np.int64)
    if max_batch is not None:
        if len(max_batch) != n:
            raise ValueError("max_batch needs one entry per worker")
        hi = np.array([total if m is None else min(m, total) for m in max_batch], dtype=np.int64)
    if len(lo) != n:
        raise ValueError("min_batch needs one entry per worker")
    if np.any(lo < 0) or np.any(hi < lo):
        raise ValueError("each worker needs 0 <= min_batch <= max_batch")
    if int(lo.sum()) > total or int(hi.sum()) < total:
        raise ValueError(f"total batch {total} is outside [Σ min = {int(lo.sum())}, Σ max = {int(hi.sum())}]")
    return lo, hi


def water_fill(*, a: FloatArray, c: FloatArray, lo: IntArray, hi: IntArray, total: int) -> FloatArray:
    """Continuous b in [lo, hi] with Σ b = total that equalises a + c·b as far as the bounds allow.

    Σ_m clip((L − a_m)/c_m, lo_m, hi_m) is piecewise linear and non-decreasing in the level L, with
    breakpoints at a_m + c_m·lo_m and a_m + c_m·hi_m: evaluate it there and interpolate exactly.
    """
    levels = np.unique(np.concatenate([a + c * lo, a + c * hi]))
    sums = np.clip((levels[:, None] - a[None, :]) / c[None, :], lo, hi).sum(axis=1)
    k = int(np.searchsorted(sums, total, side="left"))
    if k == 0:
        level = float(levels[0])
    elif k >= len(levels):
        level = float(levels[-1])
    else:
        s0, s1 = float(sums[k - 1]), float(sums[k])
        frac = (total - s0) / (s1 - s0) if s1 > s0 else 1.0
        level = float(levels[k - 1] + frac * (levels[k] - levels[k - 1]))
    return np.asarray(np.clip((level - a) / c, lo, hi), dtype=np.float64)


def round_largest_remainder(*, x: FloatArray, lo: IntArray, hi: IntArray, total: int) -> IntArray:
    """Integers within [lo, hi] summing to `total`, close to x (floor, then +1 by largest fractional part)."""
    base = np.clip(np.floor(x + 1e-9).astype(np.int64), lo, hi)
    remainder = total - int(base.sum())
    order = np.argsort(-(x - base), kind="stable")
    step = 1 if remainder > 0 else -1
    while remainder != 0:
        moved = False
        for i in order if step > 0 else order[::-1]:
            if remainder == 0:
                break
            if lo[i] <= base[i] + step <= hi[i]:
                base[i] += step
                remainder -= step
                moved = True
        if not moved:
            raise ValueError("cannot meet the total within the bounds")
    return base


def equal_split(
    *,
    total_batch: int,
    workers: int,
    min_batch: int | Sequence[int] = 1,
    max_batch: Sequence[int | None] | None = None,
) -> tuple[int, ...]:
    """The baseline: B/M each (the remainder to the first ranks), moved only as far as bounds require."""
    if workers < 1:
        raise ValueError("need at least one worker")
    lo, hi = _bounds(workers, min_batch, max_batch, total_batch)
    ones = np.ones(workers, dtype=np.float64)
    x = water_fill(a=np.zeros(workers), c=ones, lo=lo, hi=hi, total=total_batch)
    # equal fractional parts: the stable largest-remainder order hands the extra samples to the first ranks
    return tuple(int(v) for v in round_largest_remainder(x=x, lo=lo, hi=hi, total=total_batch))


def ideal_throughput(*, models: Sequence[StepTimeModel], shares: Sequence[int]) -> float:
    """Σ_m b_m / E[T_m(b_m)]: samples/s if no worker ever waited for another (an upper bound)."""
    return float(sum(b / m.mean(b) for m, b in zip(models, shares, strict=True) if b > 0))


def expected_throughput(*, models: Sequence[StepTimeModel], shares: Sequence[int]) -> float:
    """B / E[max_m T_m(b_m)]: samples/s of synchronous data-parallel training with these shares."""
    return float(sum(shares)) / expected_max_step_time(models=models, shares=shares)


def _deterministic_max(a: FloatArray, c: FloatArray, b: IntArray) -> float:
    return float(np.max(a + c * b))


def _deterministic_search(a: FloatArray, c: FloatArray, b: IntArray, lo: IntArray, hi: IntArray) -> IntArray:
    """Single-sample moves off the slowest worker while the maximum strictly drops."""
    b = b.copy()
    for _ in range(4 * len(b) + 16):
        mu = a + c * b
        i = int(np.argmax(mu))
        if b[i] - 1 < lo[i]:
            break
        up = np.where(b + 1 <= hi, a + c * (b + 1), np.inf)
        up[i] = np.inf
        j = int(np.argmin(up))
        trial = mu.copy()
        trial[i] -= c[i]
        trial[j] = up[j]
        if not float(np.max(trial)) < float(mu[i]):
            break
        b[i] -= 1
        b[j] += 1
    return b


def _stochastic_search(
    a: FloatArray,
    c: FloatArray,
    cv: FloatArray,
    b: IntArray,
    lo: IntArray,
    hi: IntArray,
    *,
    max_rounds: int,
    start_step: int,
) -> IntArray:
    """Pattern search over moves of `step` samples between the k likeliest-max and k least-loaded workers."""
    n = len(b)
    b = b.copy()
    k = min(n, _CANDIDATES)
    kappa = float(np.sqrt(2.0 * np.log(max(n, 2))))
    step = start_step
    grid = np.zeros(0)
    log_cdf = np.zeros((n, 0))
    total_log = np.zeros(0)
    for _ in range(max_rounds):
        if step < 1:
            break
        bf = b.astype(np.float64)
        mu, sd = _moments(a, c, cv, bf)
        mu_dn, sd_dn = _moments(a, c, cv, bf - step)
        mu_up, sd_up = _moments(a, c, cv, bf + step)
        need_lo = float(np.max(mu_dn - _TAIL_Z * sd_dn))
        need_hi = float(np.max(mu_up + _TAIL_Z * sd_up))
        if grid.size == 0 or need_lo < grid[0] or need_hi > grid[-1]:
            grid = _grid(mu_dn, sd_dn, mu_up, sd_up, _SEARCH_GRID)
            log_cdf = _fast_log_cdf((grid[None, :] - mu[:, None]) / sd[:, None])
            total_log = log_cdf.sum(axis=0)
        current = float(_expected_max_on_grid(grid, total_log))
        can_give = b - step >= lo
        can_take = b + step <= hi
        donors = np.argsort(np.where(can_give, -(mu + kappa * sd), np.inf), kind="stable")[:k]
        receivers = np.argsort(np.where(can_take, mu_up + kappa * sd_up, np.inf), kind="stable")[:k]
        donors = donors[can_give[donors]]
        receivers = receivers[can_take[receivers]]
        found = False
        if len(donors) and len(receivers):
            log_dn = _fast_log_cdf((grid[None, :] - mu_dn[donors, None]) / sd_dn[donors, None])
            log_up = _fast_log_cdf((grid[None, :] - mu_up[receivers, None]) / sd_up[receivers, None])
            delta_d = log_dn - log_cdf[donors]
            delta_r = log_up - log_cdf[receivers]
            trial = total_log[None, None, :] + delta_d[:, None, :] + delta_r[None, :, :]
            values = _expected_max_on_grid(grid, trial)
            values[donors[:, None] == receivers[None, :]] = np.inf
            di, rj = divmod(int(np.argmin(values)), len(receivers))
            if float(values[di, rj]) < current - 1e-12 * current:
                i, j = int(donors[di]), int(receivers[rj])
                b[i] -= step
                b[j] += step
                log_cdf[i] = log_dn[di]
                log_cdf[j] = log_up[rj]
                total_log = log_cdf.sum(axis=0)
                found = True
        if not found:
            step //= 2
    return b


def _quantile_start(
    a: FloatArray, c: FloatArray, cv: FloatArray, lo: IntArray, hi: IntArray, total: int
) -> IntArray:
    """Equalise an upper quantile μ + κσ = (a + c·b)(1 + κ·cv); κ by golden-section search on E[max]."""
    kappa_scale = float(np.sqrt(2.0 * np.log(max(len(a), 2))))
    cache: dict[float, tuple[float, IntArray]] = {}

    def evaluate(mult: float) -> float:
        if mult not in cache:
            inflate = 1.0 + mult * kappa_scale * cv
            x = water_fill(a=a * inflate, c=c * inflate, lo=lo, hi=hi, total=total)
            b = round_largest_remainder(x=x, lo=lo, hi=hi, total=total)
            mu, sd = _moments(a, c, cv, b.astype(np.float64))
            cache[mult] = (_score(mu, sd, _SEARCH_GRID), b)
        return cache[mult][0]

    left, right = 0.0, 1.5
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    x1, x2 = right - ratio * (right - left), left + ratio * (right - left)
    for _ in range(_GOLDEN_STEPS):
        if evaluate(x1) <= evaluate(x2):
            right, x2 = x2, x1
            x1 = right - ratio * (right - left)
        else:
            left, x1 = x1, x2
            x2 = left + ratio * (right - left)
    return min(cache.values(), key=lambda item: item[0])[1]


def optimize_shares(
    *,
    models: Sequence[StepTimeModel],
    total_batch: int,
    min_batch: int | Sequence[int] = 1,
    max_batch: Sequence[int | None] | None = None,
    max_rounds: int = 200,
    start_step: int = 2,
) -> ShareSolution:
    """Integer shares (Σ = total_batch, within bounds) minimising E[max_m T_m(b_m)]."""
    n = len(models)
    if n < 1:
        raise ValueError("need at least one worker")
    a, c, cv = _arrays(models)
    lo, hi = _bounds(n, min_batch, max_batch, total_batch)
    if float(np.max(cv)) == 0.0:
        x = water_fill(a=a, c=c, lo=lo, hi=hi, total=total_batch)
        start = round_largest_remainder(x=x, lo=lo, hi=hi, total=total_batch)
        searched = _deterministic_search(a, c, start, lo, hi)
    else:
        start = _quantile_start(a, c, cv, lo, hi, total_batch)
        searched = _stochastic_search(a, c, cv, start, lo, hi, max_rounds=max_rounds, start_step=start_step)
    equal = np.asarray(
        equal_split(total_batch=total_batch, workers=n, min_batch=min_batch, max_batch=max_batch)
    )
    best: tuple[float, IntArray] | None = None
    for cand in (searched, equal):
        value = expected_max_step_time(models=models, shares=[int(v) for v in cand])
        if best is None or value < best[0] - 1e-12 * value:
            best = (value, cand)
    assert best is not None
    value, shares = best
    return ShareSolution(
        shares=tuple(int(v) for v in shares),
        expected_step_s=value,
        deterministic_step_s=_deterministic_max(a, c, shares),
    )
