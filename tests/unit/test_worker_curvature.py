"""Top Hessian eigenvalue by power iteration on Hessian-vector products (the async workers' estimate)."""

from __future__ import annotations

import itertools
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


def test_the_ranks_estimate_in_turn_one_per_interval_of_global_updates() -> None:
    from paceline_worker.asynchronous.worker import curvature_due

    every = 50
    for world in (1, 2, 4, 8, 3):
        firsts = sorted(
            next(s for s in range(every) if curvature_due(step=s, every=every, rank=r, world_size=world))
            for r in range(world)
        )
        # equal speeds: worker step s is ≈ global update world·s; the fleet's estimates come every ≈ `every`
        gaps = [b - a for a, b in itertools.pairwise(firsts)]
        assert firsts[-1] == every - 1 and all(gap in (every // world, every // world + 1) for gap in gaps)
        for rank in range(world):
            due = [
                s for s in range(4 * every) if curvature_due(step=s, every=every, rank=rank, world_size=world)
            ]
            assert len(due) == 4 and all(b - a == every for a, b in itertools.pairwise(due))
    assert not any(curvature_due(step=s, every=0, rank=0, world_size=1) for s in range(100))
