"""The delayed heavy-ball recursion of an asynchronous parameter server, and the largest explicit momentum
that keeps it stable for a measured staleness distribution (pure; numpy). See docs/momentum.md.

On a quadratic with curvature h, the shard's update buf ← μ·buf + g, w ← w − α·buf with a gradient read
τ versions ago (P(τ = l) = p_l) gives, in expectation over τ,

    w_{t+1} = w_t + μ·(w_t − w_{t−1}) − α·h·Σ_l p_l·w_{t−l}

whose characteristic polynomial is  z^{L+1} − (1+μ)·z^L + μ·z^{L−1} + α·h·Σ_l p_l·z^{L−l}.
Its largest root modulus ρ(μ, α, h) is the per-update contraction of the mode with curvature h
(ρ ≥ 1: that mode diverges). Staleness shrinks the stable range of h as μ grows; the largest μ whose
recursion is stable for every h up to a bound is what `largest_stable_momentum` finds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MAX_DELAY = 48  # delays beyond this are folded into the last bucket (a conservative approximation)
CURVATURE_POINTS = 12  # log-spaced curvatures from bound/100 to the bound
RESOLUTION = 0.005  # the momentum search stops at this width
STABLE_RADIUS = 1.0 - 1e-4


def curvature_range(*, momentum: float, learning_rate: float) -> tuple[float, float]:
    """The curvatures heavy ball with (momentum, learning_rate) contracts at rate √momentum."""
    if not 0.0 <= momentum < 1.0 or learning_rate <= 0.0:
        raise ValueError("need momentum in [0, 1) and learning_rate > 0")
    root = math.sqrt(momentum)
    return (1.0 - root) ** 2 / learning_rate, (1.0 + root) ** 2 / learning_rate


def normalised_delays(weights: Sequence[float], *, max_delay: int = MAX_DELAY) -> tuple[float, ...]:
    """Weights per τ = 0, 1, ... → probabilities, the tail beyond `max_delay` folded into its last bucket,
    trailing zeros removed."""
    if any(w < 0 for w in weights):
        raise ValueError("delay weights must be >= 0")
    total = float(sum(weights))
    if total <= 0:
        return (1.0,)
    head = [float(w) / total for w in weights[: max_delay + 1]]
    head[-1] += float(sum(weights[max_delay + 1 :])) / total
    while len(head) > 1 and head[-1] == 0.0:
        head.pop()
    return tuple(head)


def spectral_radius(*, momentum: float, step: float, curvature: float, delays: Sequence[float]) -> float:
    """Largest root modulus of the expected delayed heavy-ball recursion (delays: P(τ = l), l = 0..L)."""
    order = max(len(delays) - 1, 1)  # L, at least 1: momentum alone makes the recursion second order
    coefficients = np.zeros(order + 2)  # z^{L+1} ... z^0
    coefficients[0] = 1.0
    coefficients[1] -= 1.0 + momentum
    coefficients[2] += momentum
    for lag, probability in enumerate(delays):
        coefficients[1 + lag] += step * curvature * probability
    roots = np.roots(coefficients)
    return float(np.max(np.abs(roots))) if roots.size else 0.0


def worst_radius(
    *, momentum: float, step: float, curvatures: Sequence[float], delays: Sequence[float]
) -> float:
    return max(spectral_radius(momentum=momentum, step=step, curvature=h, delays=delays) for h in curvatures)


def stable_for(
    *, momentum: float, learning_rate: float, delays: Sequence[float], curvature_bound: float
) -> bool:
    """ρ < 1 for every curvature in (0, curvature_bound] (checked on a log grid down to bound/100; below it
    the recursion is plain slow gradient descent)."""
    grid = [curvature_bound * 100.0 ** (-i / (CURVATURE_POINTS - 1)) for i in range(CURVATURE_POINTS)]
    return worst_radius(momentum=momentum, step=learning_rate, curvatures=grid, delays=delays) < STABLE_RADIUS


def largest_stable_momentum(
    *, learning_rate: float, delays: Sequence[float], curvature_bound: float, floor: float, ceiling: float
) -> float:
    """The largest μ in [floor, ceiling] whose delayed recursion is stable up to `curvature_bound`
    (bisection: staleness makes large μ unstable first); `floor` when none is."""
    if ceiling < floor:
        raise ValueError(f"ceiling {ceiling} is below floor {floor}")
    if curvature_bound <= 0 or not math.isfinite(curvature_bound):
        raise ValueError(f"curvature bound must be positive and finite, got {curvature_bound}")

    def ok(mu: float) -> bool:
        return stable_for(
            momentum=mu, learning_rate=learning_rate, delays=delays, curvature_bound=curvature_bound
        )

    if ok(ceiling):
        return ceiling
    if not ok(floor):
        return floor
    low, high = floor, ceiling  # ok(low), not ok(high)
    while high - low > RESOLUTION:
        middle = 0.5 * (low + high)
        if ok(middle):
            low = middle
        else:
            high = middle
    return low
