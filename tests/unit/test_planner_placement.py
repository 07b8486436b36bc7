"""plan_job: pools, free GPUs, batch shares by speed, clear errors."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paceline.plan_types import NodeCapacity
from paceline.planner import PlacementError, graph_from_dict, plan_job, preset
from paceline.planner.placement import split_batch

H100 = "NVIDIA-H100-80GB-HBM3"
T4 = "Tesla-T4"
PRODUCTS = [H100, "NVIDIA-A100-SXM4-80GB", "NVIDIA-L4", T4]


def node(name: str, pool: str, product: str, free: int, total: int = 8) -> NodeCapacity:
    return NodeCapacity(name=name, pool=pool, gpu_product=product, gpus_allocatable=total, gpus_free=free)


CLUSTER = [
    node("h100-a", "fast", H100, 8),
    node("h100-b", "fast", H100, 3),
    node("t4-a", "slow", T4, 8),
    node("t4-b", "slow", T4, 8),
]


def test_respects_allowed_pools_and_free_gpus() -> None:
    plan = plan_job(
        graph=None, nodes=CLUSTER, workers=5, gpus_per_worker=2, global_batch=100, allowed_pools=["slow"]
    )
    assert {w.pool for w in plan.workers} == {"slow"}
    used = Counter(w.node for w in plan.workers)
    free = {n.name: n.gpus_free for n in CLUSTER}
    assert all(count * 2 <= free[name] for name, count in used.items())
    assert sum(w.batch_share for w in plan.workers) == 100


def test_fast_gpus_first_and_shares_follow_speed() -> None:
    plan = plan_job(graph=None, nodes=CLUSTER, workers=12, gpus_per_worker=1, global_batch=256)
    assert [w.gpu_product for w in plan.workers[:11]] == [H100] * 11  # all free H100s before any T4
    fast = [w.batch_share for w in plan.workers if w.gpu_product == H100]
    slow = [w.batch_share for w in plan.workers if w.gpu_product == T4]
    assert min(fast) > max(slow)
    assert sum(fast) + sum(slow) == 256
    assert plan.predicted_step_s is None  # no model graph, no prediction
    assert len(plan.summary) <= 60


def test_measured_speed_replaces_catalog_ratio() -> None:
    nodes = [node("a", "p", H100, 1, 1), node("b", "p", T4, 1, 1)]
    catalog_plan = plan_job(graph=None, nodes=nodes, workers=2, gpus_per_worker=1, global_batch=100)
    measured = plan_job(
        graph=None,
        nodes=nodes,
        workers=2,
        gpus_per_worker=1,
        global_batch=100,
        measured_speed={H100: 1, T4: 1},
    )
    assert catalog_plan.workers[0].batch_share > 80
    assert sorted(w.batch_share for w in measured.workers) == [50, 50]


def test_clear_error_when_workers_do_not_fit() -> None:
    with pytest.raises(PlacementError, match=r"cannot place 4 workers x 4 GPUs.*room for 2"):
        plan_job(
            graph=None, nodes=CLUSTER, workers=4, gpus_per_worker=4, global_batch=64, allowed_pools=["fast"]
        )
    with pytest.raises(PlacementError, match="lower gpusPerWorker"):
        plan_job(graph=None, nodes=CLUSTER, workers=1, gpus_per_worker=16, global_batch=64)
    with pytest.raises(PlacementError, match="no nodes in the allowed pools"):
        plan_job(
            graph=None, nodes=CLUSTER, workers=1, gpus_per_worker=1, global_batch=64, allowed_pools=["tpu"]
        )
    with pytest.raises(PlacementError, match="smaller than the 8 workers"):
        plan_job(graph=None, nodes=CLUSTER, workers=8, gpus_per_worker=1, global_batch=4)


def test_plan_with_graph_predicts_and_explains() -> None:
    nodes = [node("h100-a", "fast", H100, 4, 4), node("t4-a", "slow", T4, 4, 4)]
    plan = plan_job(graph=preset("alexnet"), nodes=nodes, workers=8, gpus_per_worker=1, global_batch=256)
    assert plan.predicted_step_s is not None and plan.baseline_step_s is not None
    assert 0 < plan.predicted_step_s <= plan.baseline_step_s
    assert len(plan.summary) <= 60
    assert "ms/step" in plan.reason and "alexnet" in plan.reason
    assert [row["layer"] for row in plan.layers] == [layer.name for layer in preset("alexnet").layers]
    assert sum(w.batch_share for w in plan.workers) == 256


def test_model_too_big_for_the_gpus_is_a_placement_error() -> None:
    huge = {
        "name": "huge",
        "layers": [
            {
                "name": "fc",
                "op": "gemm",
                "dims": {"b": 8, "n": 65536, "k": 65536},
                "gemm": {"m": ["b"], "n": ["n"], "k": ["k"]},
                "inputs": [{"axes": ["b", "k"]}],
                "output": ["b", "n"],
                "weights": ["n", "k"],
            }
        ],
    }
    with pytest.raises(PlacementError, match="does not fit in GPU memory"):
        plan_job(
            graph=graph_from_dict(huge),
            nodes=[node("t4", "p", T4, 2)],
            workers=2,
            gpus_per_worker=1,
            global_batch=8,
        )


@settings(max_examples=60, deadline=None)
@given(
    free=st.lists(st.integers(0, 8), min_size=1, max_size=6),
    kinds=st.lists(st.sampled_from(PRODUCTS), min_size=6, max_size=6),
    pools=st.lists(st.sampled_from(["a", "b"]), min_size=6, max_size=6),
    allowed=st.sampled_from([(), ("a",), ("b",), ("a", "b")]),
    workers=st.integers(1, 12),
    gpw=st.integers(1, 4),
    batch=st.integers(1, 512),
)
def test_placement_respects_capacity_pools_and_batch(
    free: list[int],
    kinds: list[str],
    pools: list[str],
    allowed: tuple[str, ...],
    workers: int,
    gpw: int,
    batch: int,
) -> None:
    nodes = [node(f"n{i}", pools[i], kinds[i], f) for i, f in enumerate(free)]
    try:
        plan = plan_job(
            graph=None,
            nodes=nodes,
            workers=workers,
            gpus_per_worker=gpw,
            global_batch=batch,
            allowed_pools=allowed,
        )
    except PlacementError:
        room = sum(n.gpus_free // gpw for n in nodes if not allowed or n.pool in allowed)
        assert room < workers or batch < workers
        return
    assert len(plan.workers) == workers
    assert sorted(w.rank for w in plan.workers) == list(range(workers))
    by_name = {n.name: n for n in nodes}
    for name, count in Counter(w.node for w in plan.workers).items():
        assert count * gpw <= by_name[name].gpus_free
        assert not allowed or by_name[name].pool in allowed
    assert sum(w.batch_share for w in plan.workers) == batch
    assert all(w.batch_share >= 1 for w in plan.workers)


@given(total=st.integers(1, 10_000), weights=st.lists(st.floats(0.1, 100.0), min_size=1, max_size=32))
def test_split_batch_is_exact_and_proportional(total: int, weights: list[float]) -> None:
    if total < len(weights):
        with pytest.raises(PlacementError):
            split_batch(total, weights)
        return
    shares = split_batch(total, weights)
    assert sum(shares) == total and min(shares) >= 1
    weight_sum = sum(weights)
    for share, w in zip(shares, weights, strict=True):
        ideal = total * w / weight_sum
        assert (
            abs(share - ideal) <= 2 + len(weights) * w / weight_sum
        )  # one sample each, then largest remainder
