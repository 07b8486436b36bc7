"""Top Hessian eigenvalue of the loss on one batch, by power iteration on Hessian-vector products.

The asynchronous momentum policy needs the largest curvature h_max of the loss: how much explicit momentum
the delayed heavy-ball recursion tolerates depends on it (docs/momentum.md). A worker estimates it every
PACELINE_CURVATURE_EVERY steps on the batch at hand and exports it as a gauge; the operator averages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

DEFAULT_ITERATIONS = 8


def top_hessian_eigenvalue(
    loss_at: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    *,
    iterations: int = DEFAULT_ITERATIONS,
    start: Sequence[torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[float, list[torch.Tensor]]:
    """(λ_max estimate, the last direction) for the loss `loss_at()` returns at the current parameters.

    Each iteration is one Hessian-vector product (a double backward). `start` warm-starts the direction
    (pass the previous result: the top eigenvector changes slowly during training). The Rayleigh quotient
    of the last direction is returned; a non-finite result is returned as NaN.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    trainable = [p for p in params if p.requires_grad]
    loss = loss_at()
    grads = torch.autograd.grad(loss, trainable, create_graph=True)
    if start is not None and len(start) == len(trainable):
        direction = [s.detach().clone() for s in start]
    else:
        direction = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in trainable]
    estimate = math.nan
    for _ in range(iterations):
        norm = torch.sqrt(torch.stack([(d * d).sum() for d in direction]).sum())
        if not torch.isfinite(norm) or float(norm) == 0.0:
            return math.nan, direction
        direction = [d / norm for d in direction]
        product = torch.autograd.grad(grads, trainable, grad_outputs=direction, retain_graph=True)
        estimate = float(torch.stack([(h * d).sum() for h, d in zip(product, direction, strict=True)]).sum())
        direction = [h.detach() for h in product]
    return (estimate if math.isfinite(estimate) else math.nan), direction
