"""Pure resize decisions: lost workers, whether growth pays for its pause, next generation's order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paceline.elastic import NodeState, growth_worth_it, lost_workers, next_order, node_states
from paceline.plan_types import WorkerPlacement


def _w(rank: int, node: str) -> WorkerPlacement:
    return WorkerPlacement(rank=rank, node=node, pool="a100", gpu_product="A100", gpus=2, batch_share=8)


def test_workers_on_missing_or_not_ready_nodes_are_lost_cordoned_ones_are_not() -> None:
    nodes = node_states(
        [
            {"metadata": {"name": "a"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "b"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}},
            {
                "metadata": {"name": "c"},
                "spec": {"unschedulable": True},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            },
        ]
    )
    assert nodes["c"] == NodeState(name="c", ready=True, schedulable=False)
    workers = [_w(0, "a"), _w(1, "b"), _w(2, "c"), _w(3, "gone")]
    assert lost_workers(workers, nodes) == (1, 3)


def test_growth_pays_only_beyond_threshold_after_the_pause() -> None:
    doubling = growth_worth_it(
        current_step_s=1.0, new_step_s=0.5, pause_s=10, horizon_s=600, min_gain_percent=10
    )
    assert doubling.grow and doubling.gain_percent == pytest.approx(100 * (2 * 590 / 600 - 1))
    small = growth_worth_it(
        current_step_s=1.0, new_step_s=0.95, pause_s=10, horizon_s=600, min_gain_percent=10
    )
    assert not small.grow and "not worth it" in small.reason
    short = growth_worth_it(current_step_s=1.0, new_step_s=0.5, pause_s=60, horizon_s=60, min_gain_percent=0)
    assert not short.grow, "a pause as long as the horizon never pays"
    with pytest.raises(ValueError):
        growth_worth_it(current_step_s=0, new_step_s=1, pause_s=1, horizon_s=1, min_gain_percent=1)


@given(
    current=st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=8),
    lost=st.lists(st.sampled_from("abcdefgh"), max_size=4),
    added=st.lists(st.sampled_from("ijklm"), unique=True, max_size=4),
)
def test_survivors_keep_their_order_and_new_pods_follow(
    current: list[str], lost: list[str], added: list[str]
) -> None:
    order = next_order(current, lost, added)
    survivors = [p for p in current if p not in lost]
    assert list(order[: len(survivors)]) == survivors
    assert list(order[len(survivors) :]) == added
