"""Plain data shared by the planner, the placement code and the operator."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class NodeCapacity:
    """One schedulable GPU node as the planner sees it."""

    name: str
    pool: str
    gpu_product: str  # value of the node's `nvidia.com/gpu.product` label
    gpus_allocatable: int
    gpus_free: int  # allocatable minus GPUs requested by pods already bound there


@dataclass(frozen=True, kw_only=True)
class WorkerPlacement:
    """Where one worker rank runs and how much of the global batch it takes."""

    rank: int
    node: str
    pool: str
    gpu_product: str
    gpus: int
    batch_share: int


@dataclass(frozen=True, kw_only=True)
class JobPlan:
    """A parallelization strategy plus a placement of every rank onto nodes."""

    strategy: str  # short, e.g. "data-parallel x8" or "hybrid: conv batch-split, fc model-split 4"
    summary: str  # one line for status / printer columns
    workers: tuple[WorkerPlacement, ...]
    predicted_step_s: float | None = None
    baseline_step_s: float | None = None  # plain data parallel with equal shares, same cost model
    reason: str = ""  # why this plan: goes into the `Planned` event
    layers: tuple[dict[str, str], ...] = field(default_factory=tuple)  # per-layer strategy rows (optional)
