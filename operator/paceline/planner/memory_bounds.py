"""How many samples a worker's GPUs can hold: the model's memory per GPU, fixed and per sample.

Per GPU, training holds every parameter with its gradient and optimizer state (`BYTES_PER_PARAM`, fp32
weight + gradient + two Adam moments, the planner's assumption) and every layer's output activation per
sample (`BYTES_PER_ACTIVATION`, fp32); a layer split across a tensor-parallel group holds 1/t of both. A
worker pod with g GPUs runs g/t data-parallel groups, each holding its samples' activations, so its largest
batch share is g/t times what one GPU's free memory holds. An estimate, as the planner's: no framework
workspace, no recomputation, no mixed precision. Pure functions."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

from paceline.planner.graph import Layer, LayerGraph, with_batch

BYTES_PER_PARAM = 16.0  # fp32 weight + gradient + two Adam moments (HeteroCostModel's default)
BYTES_PER_ACTIVATION = 4.0  # fp32
USABLE_FRACTION = 0.9  # of a GPU's memory: the rest is the CUDA context, allocator slack, workspaces


@dataclass(frozen=True, kw_only=True)
class MemoryFootprint:
    """Bytes one GPU holds for the model: independent of the batch, and per sample of its group's batch."""

    fixed_bytes: float
    bytes_per_sample: float


def weight_count(layer: Layer) -> int:
    return layer.weight_scale * math.prod(layer.size_of(d) for d in layer.weights) if layer.weights else 0


def footprint(graph: LayerGraph, *, tensor_parallel: int, split_layers: Collection[str]) -> MemoryFootprint:
    """The footprint per GPU of `graph` when the layers `split_layers` are split `tensor_parallel` ways."""
    one = with_batch(graph, 1)
    fixed = per_sample = 0.0
    for layer in one.layers:
        share = 1.0 / tensor_parallel if layer.name in split_layers else 1.0
        fixed += weight_count(layer) * BYTES_PER_PARAM * share
        per_sample += math.prod(layer.output_shape) * BYTES_PER_ACTIVATION * share
    return MemoryFootprint(fixed_bytes=fixed, bytes_per_sample=per_sample)


def max_batch(
    footprint: MemoryFootprint,
    *,
    capacity_bytes: float,
    gpus: int,
    tensor_parallel: int,
    usable_fraction: float = USABLE_FRACTION,
) -> int | None:
    """The largest batch share a worker pod of `gpus` GPUs with `capacity_bytes` each can train (0 when
    the model alone does not fit); None when the model holds no activations (no bound)."""
    if footprint.bytes_per_sample <= 0:
        return None
    room = capacity_bytes * usable_fraction - footprint.fixed_bytes
    per_group = max(0, math.floor(room / footprint.bytes_per_sample))
    return per_group * max(1, gpus // tensor_parallel)
