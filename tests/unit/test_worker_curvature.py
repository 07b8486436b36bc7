"""Top Hessian eigenvalue by power iteration on Hessian-vector products (the async workers' estimate)."""

from __future__ import annotations

import math

import pytest
import torch

from paceline_worker.curvature import top_hessian_eigenvalue


def test_power_iteration_finds_the_largest_curvature_of_a_quadratic() -> None:
    weights = torch.zeros(4, requires_grad=True)
    diagonal = torch.tensor([0.5, 1.0, 3.0, 7.0])
    generator = torch.Generator().manual_seed(0)
    value, direction = top_hessian_eigenvalue(
        lambda: 0.5 * (diagonal * weights * weights).sum(), [weights], iterations=40, generator=generator
    )
    assert value == pytest.approx(7.0, rel=1e-3)
    again, _ = top_hessian_eigenvalue(
        lambda: 0.5 * (diagonal * weights * weights).sum(), [weights], iterations=1, start=direction
    )
    assert again == pytest.approx(7.0, rel=1e-3)  # warm start: one iteration is enough


def test_a_linear_loss_has_no_curvature() -> None:
    weights = torch.ones(3, requires_grad=True)
    value, _ = top_hessian_eigenvalue(lambda: (weights * 2.0).sum() + (weights * 0).pow(2).sum(), [weights])
    assert value == 0.0 or math.isnan(value)
