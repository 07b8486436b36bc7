"""Memory bounds: the model's footprint per GPU from its layer graph, each worker's largest batch share."""

from __future__ import annotations

import pytest
from worker_samples import worker_sample

from paceline.controller.rebalance import worker_max_batch
from paceline.controller.samples import WorkerSample
from paceline.plan_types import JobPlan, NodeCapacity, WorkerPlacement
from paceline.planner.builder import GraphBuilder
from paceline.planner.devices import GIB, DeviceCatalog
from paceline.planner.job import plan_job
from paceline.planner.memory_bounds import (
    BYTES_PER_ACTIVATION,
    BYTES_PER_PARAM,
    MemoryFootprint,
    footprint,
    max_batch,
)

A100, T4 = "NVIDIA-A100-SXM4-40GB", "Tesla-T4"


def mlp(batch: int = 32):  # type: ignore[no-untyped-def]
    """fc 1024 -> 4096 -> 10 (+ loss)."""
    g = GraphBuilder(name="mlp", min_split_size=1)
    x = g.fc(None, (batch, 1024), 4096, pointwise=1, name="fc1")
    x = g.fc(x, g.shape(x), 10, name="fc2")
    g.softmax_xent(x, g.shape(x), name="loss")
    return g.build()


def test_footprint_counts_weights_once_and_activations_per_sample() -> None:
    held = footprint(mlp(batch=32), tensor_parallel=1, split_layers=())
    weights = 1024 * 4096 + 4096 * 10
    assert held.fixed_bytes == pytest.approx(weights * BYTES_PER_PARAM, rel=0.01)
    activations = 4096 + 10  # per sample: fc1's and fc2's outputs, plus the loss's few values
    assert (
        activations * BYTES_PER_ACTIVATION
        <= held.bytes_per_sample
        <= (activations + 16) * BYTES_PER_ACTIVATION
    )
    assert footprint(mlp(batch=256), tensor_parallel=1, split_layers=()) == held  # the batch does not matter


def test_a_tensor_parallel_split_divides_what_the_split_layer_holds() -> None:
    whole = footprint(mlp(), tensor_parallel=1, split_layers=())
    split = footprint(mlp(), tensor_parallel=2, split_layers={"fc1"})
    fc1_weights = 1024 * 4096 * BYTES_PER_PARAM
    assert whole.fixed_bytes - split.fixed_bytes == pytest.approx(fc1_weights / 2, rel=0.01)
    assert whole.bytes_per_sample - split.bytes_per_sample == pytest.approx(4096 * BYTES_PER_ACTIVATION / 2)


def test_max_batch_is_what_free_memory_holds_per_data_parallel_group() -> None:
    held = MemoryFootprint(fixed_bytes=4 * GIB, bytes_per_sample=0.5 * GIB)
    # 16 GiB x 0.9 usable - 4 GiB = 10.4 GiB: 20 samples per GPU group; 4 GPUs, TP 2 -> 2 groups
    assert max_batch(held, capacity_bytes=16 * GIB, gpus=4, tensor_parallel=2) == 40
    assert max_batch(held, capacity_bytes=16 * GIB, gpus=4, tensor_parallel=1) == 80
    assert (
        max_batch(held, capacity_bytes=4 * GIB, gpus=4, tensor_parallel=1) == 0
    )  # the model alone does not fit
    assert (
        max_batch(
            MemoryFootprint(fixed_bytes=1.0, bytes_per_sample=0.0),
            capacity_bytes=GIB,
            gpus=1,
            tensor_parallel=1,
        )
        is None
    )


def sample(rank: int, gpu_memory: float | None) -> WorkerSample:
    return worker_sample(rank, gpu_memory_bytes=gpu_memory)


def placement(rank: int, product: str) -> WorkerPlacement:
    return WorkerPlacement(rank=rank, node=f"n{rank}", pool="p", gpu_product=product, gpus=1, batch_share=8)


def test_workers_are_bounded_by_nvml_memory_where_reported_else_by_the_catalog() -> None:
    plan = JobPlan(
        strategy="dp",
        summary="dp",
        workers=(placement(0, A100), placement(1, T4)),
        memory_fixed_bytes_per_gpu=2 * GIB,
        memory_bytes_per_sample_per_gpu=GIB / 8,
    )
    t4_gib = DeviceCatalog().lookup(T4).memory_gib
    bounds = worker_max_batch(plan, {0: sample(0, 80 * GIB), 1: sample(1, None)})
    assert bounds == [int((80 * 0.9 - 2) * 8), int((t4_gib * 0.9 - 2) * 8)]
    assert (
        worker_max_batch(JobPlan(strategy="dp", summary="dp", workers=plan.workers), {}) is None
    )  # no graph


def test_the_planner_stores_the_footprint_of_the_plan_it_executes() -> None:
    nodes = [
        NodeCapacity(name="a", pool="a100", gpu_product=A100, gpus_allocatable=2, gpus_free=2),
        NodeCapacity(name="t", pool="t4", gpu_product=T4, gpus_allocatable=2, gpus_free=2),
    ]
    plan = plan_job(graph=mlp(batch=64), nodes=nodes, workers=2, gpus_per_worker=2, global_batch=64)
    assert plan.memory_fixed_bytes_per_gpu is not None and plan.memory_bytes_per_sample_per_gpu is not None
    expected = footprint(
        mlp(), tensor_parallel=plan.tensor_parallel, split_layers={s.layer for s in plan.splits}
    )
    assert (plan.memory_fixed_bytes_per_gpu, plan.memory_bytes_per_sample_per_gpu) == (
        expected.fixed_bytes,
        expected.bytes_per_sample,
    )
